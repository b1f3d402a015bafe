-- Image-locality scheduling: each run knows the image its sandbox is made from, and each
-- worker reports the instance images it holds, so a claim can prefer runs whose image the
-- claiming worker already has.
ALTER TABLE runs ADD COLUMN image TEXT;
ALTER TABLE workers ADD COLUMN images TEXT[] NOT NULL DEFAULT '{}';
