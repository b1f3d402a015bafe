-- Why a fenced write about run $1 under lease token $2 from API token $3 changed nothing:
-- whether the run is done, whether $2 is its lease, whether $3 registered its (last) holder.
SELECT r.state = 'done', COALESCE(r.lease_token = $2, false),
       EXISTS (SELECT 1 FROM workers w WHERE w.id = COALESCE(r.lease_owner, r.last_worker)
                                         AND w.token_id IS NOT DISTINCT FROM $3)
FROM runs r WHERE r.id = $1
