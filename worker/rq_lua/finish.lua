-- finish.lua: record RQ jobs that succeeded, or failed for good, as RQ 2.12's
-- worker does in handle_job_success / handle_job_failure (Job._handle_success,
-- Job._handle_failure, FailedJobRegistry.add, Result.create, Job.cleanup,
-- cleanup_execution), for the common case only: the caller sends a job here only
-- when none of RQ's other branches applies (result_ttl or failure_ttl 0, retries
-- left, a Retry returned, repeats, a job hash written without RQ 2.x's fields);
-- those go through RQ's own code (worker/rq_adapter.py).
--
-- KEYS[1]  rq:wip:QUEUE          StartedJobRegistry
-- KEYS[2]  rq:finished:QUEUE     FinishedJobRegistry: job id -> expiry
-- KEYS[3]  rq:failed:QUEUE       FailedJobRegistry: job id -> expiry
-- KEYS[4]  rq:worker:NAME        the worker's hash: its job counters (left alone when missing)
-- then per job i (from 0), KEYS[5+6i .. 10+6i]:
--          rq:job:ID, rq:results:ID (the Result stream), rq:execution:ID:EXECUTION,
--          rq:executions:ID, rq:job:ID:dependents, rq:job::ID:dependencies (sic: RQ's
--          Job.dependencies_key has the extra colon)
-- ARGV[1]  worker name
-- ARGV[2]  now, whole epoch seconds (rq.utils.current_timestamp), for registry scores
-- ARGV[3]  the failed-registry TTL when a job has no failure_ttl (RQ's DEFAULT_FAILURE_TTL)
-- then per job i, ARGV[4+9i .. 12+9i]:
--          kind: "s" succeeded, "f" failed
--          job id, execution id
--          started_at, ended_at (RQ's text format)
--          execution started and ended, epoch seconds (the Result's fields)
--          payload: "s": the base64 of the serialized return value, "" for None;
--                   "f": base64 of zlib of the exception text (Result.exc_string)
--          ttl: "s": the job's result_ttl (not 0); "f": its failure_ttl, "" when unset
-- ARGV[4+9n] the seconds each job ran, in job order, comma-separated
--
-- Returns {codes, dependents}: per job 1 recorded, 0 not recorded because its
-- execution left the started registry (its lease lapsed and RQ moved the job on,
-- or this call is a retry); and the ids of recorded jobs with dependents, for the
-- caller to enqueue them through RQ.
local wip, worker = KEYS[1], ARGV[1]
local now, default_failure_ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = (#KEYS - 4) / 6
local seconds = {}
for s in string.gmatch(ARGV[4 + 9 * n], '[^,]+') do
    seconds[#seconds + 1] = tonumber(s)
end
local codes, dependents = {}, {}
local succeeded, failed, working = 0, 0, 0

local function cleanup(keys, ttl)
    -- Job.cleanup: expire the job and its dependency keys (never 0 here)
    if ttl > 0 then
        redis.call('EXPIRE', keys[1], ttl)
        redis.call('EXPIRE', keys[5], ttl)
        redis.call('EXPIRE', keys[6], ttl)
    end
end

for i = 0, n - 1 do
    local k = 5 + 6 * i
    local keys = {KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]}
    local a = 4 + 9 * i
    local kind, job_id, exec_id = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    local started_at, ended_at = ARGV[a + 3], ARGV[a + 4]
    local exec_started, exec_ended, payload, ttl = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
    local member = job_id .. ':' .. exec_id
    if not redis.call('ZSCORE', wip, member) then
        codes[#codes + 1] = 0
    else
        -- cleanup_execution
        redis.call('DEL', keys[3])
        redis.call('ZREM', wip, member)
        redis.call('ZREM', keys[4], exec_id)
        local status = (kind == 's') and 'finished' or 'failed'
        -- the fields Job.save changes (the other fields it writes hold what they held)
        redis.call('HSET', keys[1], 'status', status, 'started_at', started_at,
            'ended_at', ended_at, 'last_heartbeat', ended_at, 'worker_name', worker)
        if kind == 's' then
            ttl = tonumber(ttl)
            if payload ~= '' then
                redis.call('XADD', keys[2], 'MAXLEN', '~', 10, '*', 'type', 1,
                    'worker_name', worker, 'return_value', payload, 'execution_id', exec_id,
                    'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            else
                redis.call('XADD', keys[2], 'MAXLEN', '~', 10, '*', 'type', 1,
                    'worker_name', worker, 'execution_id', exec_id,
                    'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            end
            if ttl == -1 then
                redis.call('PERSIST', keys[2])
                redis.call('ZADD', KEYS[2], '+inf', job_id)
            else
                redis.call('EXPIRE', keys[2], ttl)
                redis.call('ZADD', KEYS[2], now + ttl, job_id)
            end
            cleanup(keys, ttl)
            succeeded = succeeded + 1
        else
            local registry_ttl = default_failure_ttl
            if ttl ~= '' then
                registry_ttl = tonumber(ttl)
            end
            cleanup(keys, registry_ttl)
            if registry_ttl < 0 then
                redis.call('ZADD', KEYS[3], registry_ttl, job_id)
            else
                redis.call('ZADD', KEYS[3], now + registry_ttl, job_id)
            end
            redis.call('XADD', keys[2], 'MAXLEN', '~', 10, '*', 'type', 2,
                'worker_name', worker, 'exc_string', payload, 'execution_id', exec_id,
                'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            if ttl == '-1' then
                redis.call('PERSIST', keys[2])
            elseif ttl ~= '' then
                redis.call('EXPIRE', keys[2], tonumber(ttl))
            end
            failed = failed + 1
        end
        working = working + (seconds[i + 1] or 0)
        if redis.call('EXISTS', keys[5]) == 1 then
            dependents[#dependents + 1] = job_id
        end
        codes[#codes + 1] = 1
    end
end
if (succeeded + failed) > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
    if succeeded > 0 then
        redis.call('HINCRBY', KEYS[4], 'successful_job_count', succeeded)
    end
    if failed > 0 then
        redis.call('HINCRBY', KEYS[4], 'failed_job_count', failed)
    end
    redis.call('HINCRBYFLOAT', KEYS[4], 'total_working_time', working)
end
return {codes, dependents}
