-- _keys.lua: put in front of dequeue.lua, start.lua, finish.lua and refresh.lua.
-- RQ's keys of one job, built around its id from the affixes the adapter derives
-- from RQ's own code and passes first (worker/sources/rq/adapter/keys.py: JOB_AFFIXES,
-- ARGV[1..12]); then the RQ major installed (ARGV[13]), for what RQ 3 writes
-- differently (RQ3 below; worker/sources/rq/adapter/versions.py lists the differences). Per-job keys travel that way, not in KEYS, so that the jobs of a
-- call travel as one JSON argument instead of six keys each: RQ's keys are not
-- cluster-safe in any case (RQ does not support Redis Cluster), and these scripts
-- run thousands of jobs per second.
--
--   rq:job:ID               rq:results:ID           rq:execution:ID:EXECUTION
--   rq:executions:ID        rq:job:ID:dependents    rq:job::ID:dependencies (sic: RQ's
--                                                   Job.dependencies_key)
local J1, J2, R1, R2, E1, E2 = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local X1, X2, D1, D2, DD1, DD2 = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local function job_key(id) return J1 .. id .. J2 end
local function results_key(id) return R1 .. id .. R2 end
local function execution_key(id, exec_id) return E1 .. id .. E2 .. exec_id end
local function executions_key(id) return X1 .. id .. X2 end
local function dependents_key(id) return D1 .. id .. D2 end
local function dependencies_key(id) return DD1 .. id .. DD2 end
local RQ3 = tonumber(ARGV[13]) >= 3
-- the script's own arguments start here
local A = 14
