-- start.lua: mark RQ jobs started by a worker, as RQ 2.12's worker does in
-- prepare_execution (an Execution, its registries) and prepare_job_execution (the
-- job's status, worker and times, and its id out of the intermediate list), plus
-- the PERSIST of Job.perform (a job's `ttl` no longer applies once it runs).
--
-- KEYS[1]  rq:wip:QUEUE                  StartedJobRegistry: "<job>:<execution>" -> lease end
-- KEYS[2]  rq:queue:QUEUE:intermediate   dequeued, not yet started jobs
-- KEYS[3]  rq:worker:NAME                the worker's hash (left alone when missing)
-- then per job i (from 0), KEYS[4+3i .. 6+3i]:
--          rq:job:ID                     the job's hash
--          rq:execution:ID:EXECUTION     the execution's hash
--          rq:executions:ID              ExecutionRegistry of the job
-- ARGV[1]  worker name
-- ARGV[2]  now, epoch seconds (the execution's created_at and last_heartbeat)
-- ARGV[3]  now, RQ's text format (the job's started_at and last_heartbeat)
-- ARGV[4]  lease, seconds (TTL of the execution's hash)
-- ARGV[5]  started-registry score: now + lease
-- ARGV[6]  execution-registry score: now + lease + 60
-- then per job i, ARGV[7+2i], ARGV[8+2i]: job id, execution id
--
-- Returns one code per job: 1 started (or already started by this very
-- execution: a retried call), 0 no longer in the intermediate list (taken back
-- by maintenance, or failed as stuck by RQ's), -1 the job hash is gone (deleted,
-- or expired after its `ttl`), -2 the job was canceled. Only code 1 may run.
local worker, now, now_text = ARGV[1], ARGV[2], ARGV[3]
local lease, wip_score, exec_score = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local codes = {}
local last_started = nil
local n = (#KEYS - 3) / 3
for i = 0, n - 1 do
    local job_key, exec_key, execs_key = KEYS[4 + 3 * i], KEYS[5 + 3 * i], KEYS[6 + 3 * i]
    local job_id, exec_id = ARGV[7 + 2 * i], ARGV[8 + 2 * i]
    local member = job_id .. ':' .. exec_id
    local code
    if redis.call('ZSCORE', KEYS[1], member) then
        code = 1
    elseif redis.call('EXISTS', job_key) == 0 then
        redis.call('LREM', KEYS[2], 1, job_id)
        code = -1
    elseif redis.call('HGET', job_key, 'status') == 'canceled' then
        redis.call('LREM', KEYS[2], 1, job_id)
        code = -2
    elseif redis.call('LREM', KEYS[2], 1, job_id) == 0 then
        code = 0
    else
        redis.call('HSET', exec_key, 'id', exec_id, 'created_at', now,
            'last_heartbeat', now, 'worker_name', worker)
        redis.call('EXPIRE', exec_key, lease)
        redis.call('ZADD', execs_key, exec_score, exec_id)
        redis.call('EXPIRE', execs_key, lease + 60)
        redis.call('ZADD', KEYS[1], wip_score, member)
        redis.call('HSET', job_key, 'last_heartbeat', now_text, 'status', 'started',
            'started_at', now_text, 'worker_name', worker)
        redis.call('PERSIST', job_key)
        last_started = job_id
        code = 1
    end
    codes[#codes + 1] = code
end
if last_started and redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('HSET', KEYS[3], 'state', 'busy', 'current_job', last_started,
        'current_job_working_time', 0, 'last_heartbeat', now_text)
end
return codes
