-- refresh.lua: renew the leases of running RQ jobs, as RQ 2.12's worker does in
-- maintain_heartbeats (Execution.heartbeat, Job.heartbeat), for each execution
-- still in the started registry. An execution that left it (its lease lapsed and
-- RQ's registry cleanup failed or retried the job) is not brought back.
-- Preceded by _keys.lua (per-job keys, and A).
--
-- KEYS[1]  rq:wip:QUEUE   StartedJobRegistry
-- ARGV[A]    now, epoch seconds      ARGV[A+1]  now, RQ's text format
-- ARGV[A+2]  lease, seconds          ARGV[A+3]  started-registry score: now + lease
-- ARGV[A+4]  execution-registry score: now + lease + 60
-- then per execution: job id, execution id
-- Writes per execution: rq:job:ID, rq:execution:ID:EXECUTION, rq:executions:ID.
--
-- Returns one code per execution: 1 renewed, 0 gone from the started registry.
local now, now_text, lease = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2])
local codes = {}
for i = A + 5, #ARGV, 2 do
    local job_id, exec_id = ARGV[i], ARGV[i + 1]
    local member = job_id .. ':' .. exec_id
    if redis.call('ZSCORE', KEYS[1], member) then
        local ek, xk, jk = execution_key(job_id, exec_id), executions_key(job_id), job_key(job_id)
        redis.call('ZADD', KEYS[1], 'XX', ARGV[A + 3], member)
        redis.call('HSET', ek, 'last_heartbeat', now)
        redis.call('EXPIRE', ek, lease)
        redis.call('ZADD', xk, ARGV[A + 4], exec_id)
        redis.call('EXPIRE', xk, lease + 60)
        if redis.call('EXISTS', jk) == 1 then
            redis.call('HSET', jk, 'last_heartbeat', now_text)
        end
        codes[#codes + 1] = 1
    else
        codes[#codes + 1] = 0
    end
end
return codes
