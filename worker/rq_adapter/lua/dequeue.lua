-- dequeue.lua: take up to N job ids from the head of an RQ queue, moving each to
-- the queue's intermediate list, as RQ 2.x's Queue.lmove does for one
-- (LMOVE LEFT RIGHT), and read the fields of each job's hash the node needs.
-- A node that dies before it starts them leaves them in the intermediate list,
-- where maintenance (worker/rq_adapter/maintenance.py: recover_stuck) finds them. Preceded by
-- _keys.lua (per-job keys, and A).
--
-- KEYS[1]    rq:queue:NAME                 the queue (a list of job ids)
-- KEYS[2]    rq:queue:NAME:intermediate    where dequeued, not yet started jobs wait
-- ARGV[A]    N, the most ids to move
-- ARGV[A+1]  how many ids follow that were moved already (by a BLMOVE), to read too
-- then       those ids, then the names of the hash fields to read
-- Reads per job: rq:job:ID.
--
-- Returns {id, fields, id, fields, ...}: per job its id and its fields packed as
-- (4-byte big-endian signed length, bytes)* with length -1 for a missing field; or
-- "" when the job's hash is gone (deleted, or expired after its `ttl`): then its id
-- also leaves the intermediate list, as RQ's own cleanup would take it out.
local moved_before = tonumber(ARGV[A + 1])
local names = {}
for i = A + 2 + moved_before, #ARGV do
    names[#names + 1] = ARGV[i]
end
local ids = {}
for i = A + 2, A + 1 + moved_before do
    ids[#ids + 1] = ARGV[i]
end
for _ = 1, tonumber(ARGV[A]) do
    local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
    if not id then
        break
    end
    ids[#ids + 1] = id
end
local out = {}
for _, id in ipairs(ids) do
    local values = redis.call('HMGET', job_key(id), unpack(names))
    local packed = {}
    if values[1] then
        for i = 1, #names do
            local v = values[i]
            if v then
                packed[i] = struct.pack('>i4', #v) .. v
            else
                packed[i] = struct.pack('>i4', -1)
            end
        end
    else
        redis.call('LREM', KEYS[2], 1, id)
    end
    out[#out + 1] = id
    out[#out + 1] = table.concat(packed)
end
return out
