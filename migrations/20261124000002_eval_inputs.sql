-- Evaluation runs carry the patch they grade (predictions submitted with `steer eval`), and
-- sweeps say where their model name came from (the predictions' model_name_or_path).
ALTER TABLE runs ADD COLUMN input_patch TEXT;
ALTER TABLE sweeps ADD COLUMN kind TEXT NOT NULL DEFAULT 'sweep' CHECK (kind IN ('sweep', 'eval'));
