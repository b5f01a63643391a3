-- _keys.lua: put in front of start.lua, finish.lua and refresh.lua. RQ's keys of
-- one job, built around its id from the affixes the adapter derives from RQ's own
-- code and passes first (worker/rq_adapter/keys.py: JOB_AFFIXES, ARGV[1..12]). Per-job
-- keys travel that way, not in KEYS, so that a job costs two arguments instead of
-- six keys: RQ's keys are not cluster-safe in any case (RQ does not support Redis
-- Cluster), and these scripts run thousands of jobs per second.
--
--   rq:job:ID               rq:results:ID           rq:execution:ID:EXECUTION
--   rq:executions:ID        rq:job:ID:dependents    rq:job::ID:dependencies (sic: RQ's
--                                                   Job.dependencies_key)
local function job_key(id) return ARGV[1] .. id .. ARGV[2] end
local function results_key(id) return ARGV[3] .. id .. ARGV[4] end
local function execution_key(id, exec_id) return ARGV[5] .. id .. ARGV[6] .. exec_id end
local function executions_key(id) return ARGV[7] .. id .. ARGV[8] end
local function dependents_key(id) return ARGV[9] .. id .. ARGV[10] end
local function dependencies_key(id) return ARGV[11] .. id .. ARGV[12] end
-- the script's own arguments start here
local A = 13
