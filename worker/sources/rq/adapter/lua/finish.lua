-- finish.lua: record RQ jobs that succeeded, or failed for good, as RQ's worker
-- does in handle_job_success / handle_job_failure (Job._handle_success,
-- Job._handle_failure, FailedJobRegistry.add, Result.create, Job.cleanup,
-- cleanup_execution), for the common case only: the caller sends a job here only
-- when none of RQ's other branches applies (result_ttl or failure_ttl 0, retries
-- left, a Retry returned, repeats, RQ 3's rate limits, a job hash that lacks a
-- field RQ's Job.to_dict always writes); those go through RQ's own code
-- (worker/sources/rq/adapter/rq_worker.py). Preceded by _keys.lua (per-job keys, and A).
-- Commands that take many keys or members (the registries' ZMSCORE, ZREM and
-- ZADD, the executions' DEL, a first EXISTS of the dependency keys) run once per
-- call; they leave what one command per job would.
--
-- KEYS[1]  rq:wip:QUEUE          StartedJobRegistry
-- KEYS[2]  rq:finished:QUEUE     FinishedJobRegistry: job id -> expiry
-- KEYS[3]  rq:failed:QUEUE       FailedJobRegistry: job id -> expiry
-- KEYS[4]  rq:worker:NAME        the worker's hash: its job counters (left alone when missing)
-- KEYS[5]  rq:worker:NAME:executions   RQ 3: the worker's running executions (RQ 2: untouched)
-- ARGV[A]    worker name
-- ARGV[A+1]  now, whole epoch seconds (rq.utils.current_timestamp), for registry scores
-- ARGV[A+2]  the failed-registry TTL when a job has no failure_ttl (DEFAULT_FAILURE_TTL)
-- ARGV[A+3]  the jobs, a JSON array of 10 strings per job:
--          kind: "s" succeeded, "f" failed
--          job id, execution id
--          started_at, ended_at (RQ's text format)
--          execution started and ended, epoch seconds (the Result's fields)
--          payload: "s": the base64 of the serialized return value, "" for None;
--                   "f": base64 of zlib of the exception text (Result.exc_string)
--          ttl: "s": the job's result_ttl (not 0); "f": its failure_ttl, "" when unset
--          the seconds it ran (for the worker's total_working_time)
-- Writes per job: rq:job:ID, rq:results:ID, rq:execution:ID:EXECUTION,
-- rq:executions:ID, and the TTLs of rq:job:ID:dependents and rq:job::ID:dependencies.
--
-- Returns {codes, dependents}: codes, a string of one character per job: "1"
-- recorded, "0" not recorded because its execution left the started registry
-- (its lease lapsed and RQ moved the job on, or this call is a retry); and the
-- ids of recorded jobs with dependents, for the caller to enqueue them through RQ.
local wip, worker = KEYS[1], ARGV[A]
local now = tonumber(ARGV[A + 1])
local default_failure_ttl = ARGV[A + 2]
-- TTLs go to Redis as the strings they came as (a Lua number would be formatted
-- anew by each command); registry scores, now + TTL, once per TTL
local expiries = {}
local function expiry(ttl)
    local at = expiries[ttl]
    if not at then
        at = now + tonumber(ttl)
        expiries[ttl] = at
    end
    return at
end
local jobs = cjson.decode(ARGV[A + 3])
local FIELDS = 10

-- cleanup_execution's ZREM from the started registry, for all jobs at once: the
-- executions still there are recorded (a member listed twice, only once)
local members = {}
for a = 1, #jobs, FIELDS do
    members[#members + 1] = jobs[a + 1] .. ':' .. jobs[a + 2]
end
if #members == 0 then
    return {'', {}}
end
local scores = redis.call('ZMSCORE', wip, unpack(members))
local codes, present, seen = {}, {}, {}
for j, member in ipairs(members) do
    if scores[j] and not seen[member] then
        seen[member] = true
        present[#present + 1] = member
        codes[j] = '1'
    else
        codes[j] = '0'
    end
end
if #present == 0 then
    return {table.concat(codes), {}}
end
redis.call('ZREM', wip, unpack(present))
if RQ3 then
    redis.call('SREM', KEYS[5], unpack(present))
end

-- Job.cleanup's dependency keys rarely exist: one EXISTS for all of them first
local dependency_keys = {}
for j = 1, #members do
    if codes[j] == '1' then
        local job_id = jobs[(j - 1) * FIELDS + 2]
        dependency_keys[#dependency_keys + 1] = dependents_key(job_id)
        dependency_keys[#dependency_keys + 1] = dependencies_key(job_id)
    end
end
local any_dependencies = redis.call('EXISTS', unpack(dependency_keys)) > 0

-- Job.cleanup: expire the job and its dependency keys (ttl, a string, is never 0
-- here). Returns whether the job has dependents.
local function cleanup(job_id, ttl)
    local deps = false
    local dk, ddk
    if any_dependencies then
        dk, ddk = dependents_key(job_id), dependencies_key(job_id)
        deps = redis.call('EXISTS', dk, ddk) > 0
    end
    if tonumber(ttl) > 0 then
        redis.call('EXPIRE', job_key(job_id), ttl)
        if deps then
            redis.call('EXPIRE', dk, ttl)
            redis.call('EXPIRE', ddk, ttl)
        end
    end
    return deps and redis.call('EXISTS', dk) == 1
end

local dependents, executions, finished, failed_entries = {}, {}, {}, {}
local succeeded, failed, working = 0, 0, 0
for j = 1, #members do
    if codes[j] == '1' then
        local a = (j - 1) * FIELDS + 1
        local kind, job_id, exec_id = jobs[a], jobs[a + 1], jobs[a + 2]
        local started_at, ended_at = jobs[a + 3], jobs[a + 4]
        local exec_started, exec_ended = jobs[a + 5], jobs[a + 6]
        local payload, ttl = jobs[a + 7], jobs[a + 8]
        local jk, rk = job_key(job_id), results_key(job_id)
        local has_dependents
        -- cleanup_execution (its ZREM from the started registry: above)
        executions[#executions + 1] = execution_key(job_id, exec_id)
        redis.call('ZREM', executions_key(job_id), exec_id)
        -- Job.save: the fields that change (the others it writes hold what they held)
        redis.call('HSET', jk, 'status', (kind == 's') and 'finished' or 'failed',
            'started_at', started_at, 'ended_at', ended_at, 'last_heartbeat', ended_at,
            'worker_name', worker)
        if kind == 's' then
            if payload ~= '' then
                redis.call('XADD', rk, 'MAXLEN', '~', 10, '*', 'type', 1,
                    'worker_name', worker, 'return_value', payload, 'execution_id', exec_id,
                    'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            else
                redis.call('XADD', rk, 'MAXLEN', '~', 10, '*', 'type', 1,
                    'worker_name', worker, 'execution_id', exec_id,
                    'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            end
            if ttl == '-1' then
                redis.call('PERSIST', rk)
                finished[#finished + 1] = '+inf'
            else
                redis.call('EXPIRE', rk, ttl)
                finished[#finished + 1] = expiry(ttl)
            end
            finished[#finished + 1] = job_id
            has_dependents = cleanup(job_id, ttl)
            succeeded = succeeded + 1
        else
            local registry_ttl = default_failure_ttl
            if ttl ~= '' then
                registry_ttl = ttl
            end
            has_dependents = cleanup(job_id, registry_ttl)
            if tonumber(registry_ttl) < 0 then
                failed_entries[#failed_entries + 1] = registry_ttl
            else
                failed_entries[#failed_entries + 1] = expiry(registry_ttl)
            end
            failed_entries[#failed_entries + 1] = job_id
            redis.call('XADD', rk, 'MAXLEN', '~', 10, '*', 'type', 2,
                'worker_name', worker, 'exc_string', payload, 'execution_id', exec_id,
                'execution_started_at', exec_started, 'execution_ended_at', exec_ended)
            if ttl == '-1' then
                redis.call('PERSIST', rk)
            elseif ttl ~= '' then
                redis.call('EXPIRE', rk, ttl)
            end
            failed = failed + 1
        end
        working = working + (tonumber(jobs[a + 9]) or 0)
        if has_dependents then
            dependents[#dependents + 1] = job_id
        end
    end
end
redis.call('DEL', unpack(executions))
if #finished > 0 then
    redis.call('ZADD', KEYS[2], unpack(finished))
end
if #failed_entries > 0 then
    redis.call('ZADD', KEYS[3], unpack(failed_entries))
end
if redis.call('EXISTS', KEYS[4]) == 1 then
    if succeeded > 0 then
        redis.call('HINCRBY', KEYS[4], 'successful_job_count', succeeded)
    end
    if failed > 0 then
        redis.call('HINCRBY', KEYS[4], 'failed_job_count', failed)
    end
    redis.call('HINCRBYFLOAT', KEYS[4], 'total_working_time', working)
end
return {table.concat(codes), dependents}
