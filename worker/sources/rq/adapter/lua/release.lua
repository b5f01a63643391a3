-- release.lua: give dequeued jobs that never started back to the head of their
-- RQ queue, in their order: what a stopping node has not started, and what
-- maintenance finds stuck in the intermediate list of a node that died.
--
-- KEYS[1]  rq:queue:NAME                 the queue
-- KEYS[2]  rq:queue:NAME:intermediate    dequeued, not yet started jobs
-- then per job i, KEYS[2+i]: rq:queue:NAME:intermediate:first_seen:ID (the marker
--          of RQ's IntermediateQueue cleanup; deleted with the job's move)
-- ARGV     the job ids, in queue order
--
-- Returns how many went back (a job no longer in the intermediate list is left
-- where it is: someone else moved it on).
local released = 0
for i = #ARGV, 1, -1 do
    if redis.call('LREM', KEYS[2], 1, ARGV[i]) == 1 then
        redis.call('LPUSH', KEYS[1], ARGV[i])
        released = released + 1
    end
    redis.call('DEL', KEYS[2 + i])
end
return released
