-- start.lua: mark RQ jobs started by a worker, as RQ's worker does in
-- prepare_execution (an Execution, its registries) and prepare_job_execution (the
-- job's status, worker and times, its id out of the intermediate list, and the
-- PERSIST: a job's `ttl` no longer applies once it runs).
-- Preceded by _keys.lua (per-job keys, and A). Commands that take many keys or
-- members (the started registry's ZADD, the markers' DEL) run once per call.
--
-- KEYS[1]  rq:wip:QUEUE                  StartedJobRegistry: "<job>:<execution>" -> lease end
-- KEYS[2]  rq:queue:QUEUE:intermediate   dequeued, not yet started jobs
-- KEYS[3]  rq:worker:NAME                the worker's hash (left alone when missing)
-- KEYS[4]  rq:worker:NAME:executions     RQ 3: the worker's running executions (RQ 2: untouched)
-- ARGV[A]    worker name
-- ARGV[A+1]  now, epoch seconds (the execution's created_at and last_heartbeat)
-- ARGV[A+2]  now, RQ's text format (the job's started_at and last_heartbeat)
-- ARGV[A+3]  lease, seconds (TTL of the execution's hash)
-- ARGV[A+4]  started-registry score: now + lease
-- ARGV[A+5]  execution-registry score: now + lease + 60
-- ARGV[A+6]  the jobs, a JSON array: job id, execution id, job id, execution id, ...
-- Writes per job: rq:job:ID, rq:execution:ID:EXECUTION, rq:executions:ID, and
-- the worker's hash: RQ 2 names the job there (current_job), RQ 3 lists its
-- execution in KEYS[4] and writes the job's id into the Execution. Deletes rq:queue:QUEUE:intermediate:first_seen:ID (the marker RQ's
-- IntermediateQueue cleanup, or a node's maintenance, may have set on the job
-- while it waited in the intermediate list: it is not waiting any more).
--
-- Returns a string of one character per job: "1" started (or already started by
-- this very execution: a retried call), "0" no longer in the intermediate list
-- (taken back by maintenance, or failed as stuck by RQ's), "g" the job hash is
-- gone (deleted, or expired after its `ttl`), "c" the job was canceled. Only
-- "1" may run.
local worker, now, now_text = ARGV[A], ARGV[A + 1], ARGV[A + 2]
-- (numbers go to Redis as the strings they came as: a Lua number would be formatted
-- anew by every command that takes it)
local lease, wip_score, exec_score = ARGV[A + 3], ARGV[A + 4], ARGV[A + 5]
local exec_ttl = tostring(tonumber(lease) + 60)
local jobs = cjson.decode(ARGV[A + 6])
local codes, markers, started = {}, {}, {}
local last_started = nil
for i = 1, #jobs, 2 do
    local job_id, exec_id = jobs[i], jobs[i + 1]
    local jk = job_key(job_id)
    local member = job_id .. ':' .. exec_id
    local code
    local status = redis.call('HGET', jk, 'status')
    markers[#markers + 1] = KEYS[2] .. ':first_seen:' .. job_id
    if not status and redis.call('EXISTS', jk) == 0 then
        redis.call('LREM', KEYS[2], 1, job_id)
        code = 'g'
    elseif status == 'canceled' then
        redis.call('LREM', KEYS[2], 1, job_id)
        code = 'c'
    elseif redis.call('LREM', KEYS[2], 1, job_id) == 0 then
        -- not dequeued any more: started by this very execution (a retried call), or not ours
        code = redis.call('ZSCORE', KEYS[1], member) and '1' or '0'
    else
        local ek, xk = execution_key(job_id, exec_id), executions_key(job_id)
        if RQ3 then
            redis.call('HSET', ek, 'id', exec_id, 'job_id', job_id, 'created_at', now,
                'last_heartbeat', now, 'worker_name', worker)
        else
            redis.call('HSET', ek, 'id', exec_id, 'created_at', now,
                'last_heartbeat', now, 'worker_name', worker)
        end
        redis.call('EXPIRE', ek, lease)
        redis.call('ZADD', xk, exec_score, exec_id)
        redis.call('EXPIRE', xk, exec_ttl)
        started[#started + 1] = wip_score
        started[#started + 1] = member
        redis.call('HSET', jk, 'last_heartbeat', now_text, 'status', 'started',
            'started_at', now_text, 'worker_name', worker)
        redis.call('PERSIST', jk)
        last_started = job_id
        code = '1'
    end
    codes[#codes + 1] = code
end
if #markers > 0 then
    redis.call('DEL', unpack(markers))
end
if #started > 0 then
    redis.call('ZADD', KEYS[1], unpack(started))
    if RQ3 then
        local members = {}
        for m = 2, #started, 2 do
            members[#members + 1] = started[m]
        end
        redis.call('SADD', KEYS[4], unpack(members))
        redis.call('EXPIRE', KEYS[4], exec_ttl)
    end
end
if last_started and redis.call('EXISTS', KEYS[3]) == 1 then
    if RQ3 then
        redis.call('HSET', KEYS[3], 'state', 'busy', 'last_heartbeat', now_text)
    else
        redis.call('HSET', KEYS[3], 'state', 'busy', 'current_job', last_started,
            'current_job_working_time', 0, 'last_heartbeat', now_text)
    end
end
return table.concat(codes)
