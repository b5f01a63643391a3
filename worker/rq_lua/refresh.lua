-- refresh.lua: renew the leases of running RQ jobs, as RQ 2.12's worker does in
-- maintain_heartbeats (Execution.heartbeat, Job.heartbeat), for each execution
-- still in the started registry. An execution that left it (its lease lapsed and
-- RQ's registry cleanup failed or retried the job) is not brought back.
--
-- KEYS[1]  rq:wip:QUEUE   StartedJobRegistry
-- then per execution i (from 0), KEYS[2+3i .. 4+3i]:
--          rq:job:ID, rq:execution:ID:EXECUTION, rq:executions:ID
-- ARGV[1]  now, epoch seconds      ARGV[2]  now, RQ's text format
-- ARGV[3]  lease, seconds          ARGV[4]  started-registry score: now + lease
-- ARGV[5]  execution-registry score: now + lease + 60
-- then per execution i, ARGV[6+2i], ARGV[7+2i]: job id, execution id
--
-- Returns one code per execution: 1 renewed, 0 gone from the started registry.
local now, now_text, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local codes = {}
local n = (#KEYS - 1) / 3
for i = 0, n - 1 do
    local job_key, exec_key, execs_key = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
    local job_id, exec_id = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
    local member = job_id .. ':' .. exec_id
    if redis.call('ZSCORE', KEYS[1], member) then
        redis.call('ZADD', KEYS[1], 'XX', ARGV[4], member)
        redis.call('HSET', exec_key, 'last_heartbeat', now)
        redis.call('EXPIRE', exec_key, lease)
        redis.call('ZADD', execs_key, ARGV[5], exec_id)
        redis.call('EXPIRE', execs_key, lease + 60)
        if redis.call('EXISTS', job_key) == 1 then
            redis.call('HSET', job_key, 'last_heartbeat', now_text)
        end
        codes[#codes + 1] = 1
    else
        codes[#codes + 1] = 0
    end
end
return codes
