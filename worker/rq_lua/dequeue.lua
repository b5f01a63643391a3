-- dequeue.lua: take up to N job ids from the head of an RQ queue, moving each to
-- the queue's intermediate list, as RQ 2.x's Queue.lmove does for one
-- (LMOVE LEFT RIGHT). A node that dies before it starts them leaves them there,
-- where maintenance (worker/rq_adapter.py: recover_stuck) finds them.
--
-- KEYS[1]  rq:queue:NAME                 the queue (a list of job ids)
-- KEYS[2]  rq:queue:NAME:intermediate    where dequeued, not yet started jobs wait
-- ARGV[1]  N, the most ids to move
--
-- Returns the ids moved, in queue order.
local moved = {}
for _ = 1, tonumber(ARGV[1]) do
    local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
    if not id then
        break
    end
    moved[#moved + 1] = id
end
return moved
