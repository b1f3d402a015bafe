-- What a worker is doing besides its runs (e.g. pulling an image), as its last heartbeat said.
ALTER TABLE workers ADD COLUMN status TEXT;
