-- refresh.lua: renew the leases of running RQ jobs, as RQ's worker does in
-- maintain_heartbeats (Execution.heartbeat, Job.heartbeat), for each execution
-- still in the started registry. An execution that left it (its lease lapsed and
-- RQ's registry cleanup failed or retried the job) is not brought back.
-- Preceded by _keys.lua (per-job keys, and A).
--
-- KEYS[1]  rq:wip:QUEUE   StartedJobRegistry
-- ARGV[A]    now, epoch seconds      ARGV[A+1]  now, RQ's text format
-- ARGV[A+2]  lease, seconds          ARGV[A+3]  started-registry score: now + lease
-- ARGV[A+4]  execution-registry score: now + lease + 60
-- ARGV[A+5]  the executions, a JSON array: job id, execution id, job id, ...
-- Writes per execution: rq:job:ID, rq:execution:ID:EXECUTION, rq:executions:ID
-- (RQ 3 only renews an entry still there: ZADD XX).
--
-- Returns a string of one character per execution: "1" renewed, "0" gone from
-- the started registry.
local now, now_text, lease = ARGV[A], ARGV[A + 1], ARGV[A + 2]
local exec_ttl = tostring(tonumber(lease) + 60)
local jobs = cjson.decode(ARGV[A + 5])
local codes, renewed = {}, {}
for i = 1, #jobs, 2 do
    local job_id, exec_id = jobs[i], jobs[i + 1]
    local member = job_id .. ':' .. exec_id
    if redis.call('ZSCORE', KEYS[1], member) then
        local ek, xk, jk = execution_key(job_id, exec_id), executions_key(job_id), job_key(job_id)
        renewed[#renewed + 1] = ARGV[A + 3]
        renewed[#renewed + 1] = member
        redis.call('HSET', ek, 'last_heartbeat', now)
        redis.call('EXPIRE', ek, lease)
        if RQ3 then
            redis.call('ZADD', xk, 'XX', ARGV[A + 4], exec_id)
        else
            redis.call('ZADD', xk, ARGV[A + 4], exec_id)
        end
        redis.call('EXPIRE', xk, exec_ttl)
        if redis.call('EXISTS', jk) == 1 then
            redis.call('HSET', jk, 'last_heartbeat', now_text)
        end
        codes[#codes + 1] = '1'
    else
        codes[#codes + 1] = '0'
    end
end
if #renewed > 0 then
    redis.call('ZADD', KEYS[1], 'XX', unpack(renewed))
end
return table.concat(codes)
