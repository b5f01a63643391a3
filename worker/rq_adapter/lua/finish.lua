-- finish.lua: record RQ jobs that succeeded, or failed for good, as RQ 2.12's
-- worker does in handle_job_success / handle_job_failure (Job._handle_success,
-- Job._handle_failure, FailedJobRegistry.add, Result.create, Job.cleanup,
-- cleanup_execution), for the common case only: the caller sends a job here only
-- when none of RQ's other branches applies (result_ttl or failure_ttl 0, retries
-- left, a Retry returned, repeats, a job hash that lacks a field RQ 2.x's Job.to_dict
-- always writes); those go through RQ's own code
-- (worker/rq_adapter/rq_worker.py). Preceded by _keys.lua (per-job keys, and A).
--
-- KEYS[1]  rq:wip:QUEUE          StartedJobRegistry
-- KEYS[2]  rq:finished:QUEUE     FinishedJobRegistry: job id -> expiry
-- KEYS[3]  rq:failed:QUEUE       FailedJobRegistry: job id -> expiry
-- KEYS[4]  rq:worker:NAME        the worker's hash: its job counters (left alone when missing)
-- ARGV[A]    worker name
-- ARGV[A+1]  now, whole epoch seconds (rq.utils.current_timestamp), for registry scores
-- ARGV[A+2]  the failed-registry TTL when a job has no failure_ttl (DEFAULT_FAILURE_TTL)
-- ARGV[A+3]  the seconds each job ran, in job order, comma-separated
-- then per job, 9 arguments:
--          kind: "s" succeeded, "f" failed
--          job id, execution id
--          started_at, ended_at (RQ's text format)
--          execution started and ended, epoch seconds (the Result's fields)
--          payload: "s": the base64 of the serialized return value, "" for None;
--                   "f": base64 of zlib of the exception text (Result.exc_string)
--          ttl: "s": the job's result_ttl (not 0); "f": its failure_ttl, "" when unset
-- Writes per job: rq:job:ID, rq:results:ID, rq:execution:ID:EXECUTION,
-- rq:executions:ID, and the TTLs of rq:job:ID:dependents and rq:job::ID:dependencies.
--
-- Returns {codes, dependents}: per job 1 recorded, 0 not recorded because its
-- execution left the started registry (its lease lapsed and RQ moved the job on,
-- or this call is a retry); and the ids of recorded jobs with dependents, for the
-- caller to enqueue them through RQ.
local wip, worker = KEYS[1], ARGV[A]
local now = tonumber(ARGV[A + 1])
local default_failure_ttl = tonumber(ARGV[A + 2])
local seconds = {}
for s in string.gmatch(ARGV[A + 3], '[^,]+') do
    seconds[#seconds + 1] = tonumber(s)
end
local codes, dependents = {}, {}
local succeeded, failed, working = 0, 0, 0

-- Job.cleanup: expire the job and its dependency keys (ttl is never 0 here). The
-- dependency keys rarely exist: one EXISTS for both instead of two EXPIREs.
-- Returns whether the job has dependents.
local function cleanup(job_id, ttl)
    local dk, ddk = dependents_key(job_id), dependencies_key(job_id)
    local deps = redis.call('EXISTS', dk, ddk) > 0
    if ttl > 0 then
        redis.call('EXPIRE', job_key(job_id), ttl)
        if deps then
            redis.call('EXPIRE', dk, ttl)
            redis.call('EXPIRE', ddk, ttl)
        end
    end
    return deps and redis.call('EXISTS', dk) == 1
end

local j = 0
for a = A + 4, #ARGV, 9 do
    j = j + 1
    local kind, job_id, exec_id = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    local started_at, ended_at = ARGV[a + 3], ARGV[a + 4]
    local exec_started, exec_ended, payload, ttl = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
    local member = job_id .. ':' .. exec_id
    if redis.call('ZREM', wip, member) == 0 then
        codes[#codes + 1] = 0
    else
        local jk, rk = job_key(job_id), results_key(job_id)
        local has_dependents
        -- cleanup_execution (its ZREM from the started registry: above)
        redis.call('DEL', execution_key(job_id, exec_id))
        redis.call('ZREM', executions_key(job_id), exec_id)
        -- Job.save: the fields that change (the others it writes hold what they held)
        redis.call('HSET', jk, 'status', (kind == 's') and 'finished' or 'failed',
            'started_at', started_at, 'ended_at', ended_at, 'last_heartbeat', ended_at,
            'worker_name', worker)
        if kind == 's' then
            ttl = tonumber(ttl)
            if payload ~= '' then
                redis.call('XADD', rk, 'MAXLEN', '~', 10, '*', 'type', 1,
                    'worker_name', worker, 'return_value', payload, 'execution_id', exec_id,
                    'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            else
                redis.call('XADD', rk, 'MAXLEN', '~', 10, '*', 'type', 1,
                    'worker_name', worker, 'execution_id', exec_id,
                    'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            end
            if ttl == -1 then
                redis.call('PERSIST', rk)
                redis.call('ZADD', KEYS[2], '+inf', job_id)
            else
                redis.call('EXPIRE', rk, ttl)
                redis.call('ZADD', KEYS[2], now + ttl, job_id)
            end
            has_dependents = cleanup(job_id, ttl)
            succeeded = succeeded + 1
        else
            local registry_ttl = default_failure_ttl
            if ttl ~= '' then
                registry_ttl = tonumber(ttl)
            end
            has_dependents = cleanup(job_id, registry_ttl)
            if registry_ttl < 0 then
                redis.call('ZADD', KEYS[3], registry_ttl, job_id)
            else
                redis.call('ZADD', KEYS[3], now + registry_ttl, job_id)
            end
            redis.call('XADD', rk, 'MAXLEN', '~', 10, '*', 'type', 2,
                'worker_name', worker, 'exc_string', payload, 'execution_id', exec_id,
                'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            if ttl == '-1' then
                redis.call('PERSIST', rk)
            elseif ttl ~= '' then
                redis.call('EXPIRE', rk, tonumber(ttl))
            end
            failed = failed + 1
        end
        working = working + (seconds[j] or 0)
        if has_dependents then
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
