-- Marks worker $1 draining if the API token $2 registered it; says whether it did (no row: no
-- such worker).
WITH w AS (SELECT id, token_id IS NOT DISTINCT FROM $2 AS bound FROM workers WHERE id = $1),
     mark AS (UPDATE workers SET draining = true FROM w WHERE workers.id = w.id AND w.bound)
SELECT bound FROM w
