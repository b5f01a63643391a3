-- dequeue.lua: take up to N job ids from the head of an RQ queue, moving each to
-- the queue's intermediate list, as RQ's Queue.lmove does for one
-- (LMOVE LEFT RIGHT; here one LRANGE, LTRIM and RPUSH for all of them, which
-- leaves the same lists), and read the fields of each job's hash the node needs.
-- A node that dies before it starts them leaves them in the intermediate list,
-- where maintenance (worker/sources/rq/adapter/maintenance.py: recover_stuck) finds them.
-- Preceded by _keys.lua (per-job keys, and A).
--
-- KEYS[1]    rq:queue:NAME                 the queue (a list of job ids)
-- KEYS[2]    rq:queue:NAME:intermediate    where dequeued, not yet started jobs wait
-- ARGV[A]    N, the most ids to move
-- ARGV[A+1]  how many ids follow that were moved already (by a BLMOVE), to read too
-- then       those ids, then the names of the hash fields to read (F of them)
-- Reads per job: rq:job:ID.
--
-- Returns one string: per job, (1 + F) 4-byte big-endian signed lengths (the
-- id's, then each field's, -1 for a missing field), then the id and the fields
-- present. A job whose hash is gone (deleted, or expired after its `ttl`) has
-- its first field (data) missing and no others; its id also leaves the
-- intermediate list, as RQ's own cleanup would take it out.
local moved_before = tonumber(ARGV[A + 1])
local names = {}
for i = A + 2 + moved_before, #ARGV do
    names[#names + 1] = ARGV[i]
end
local ids = {}
for i = A + 2, A + 1 + moved_before do
    ids[#ids + 1] = ARGV[i]
end
local want = tonumber(ARGV[A])
if want > 0 then
    local taken = redis.call('LRANGE', KEYS[1], 0, want - 1)
    if #taken > 0 then
        redis.call('LTRIM', KEYS[1], #taken, -1)
        redis.call('RPUSH', KEYS[2], unpack(taken))
        for _, id in ipairs(taken) do
            ids[#ids + 1] = id
        end
    end
end
local header = '>i4' .. string.rep('i4', #names)
local lengths, gone = {}, {}
for i = 1, #names do
    gone[i] = -1
end
local out, n = {}, 0
for _, id in ipairs(ids) do
    local values = redis.call('HMGET', job_key(id), unpack(names))
    if values[1] then
        for i = 1, #names do
            local v = values[i]
            lengths[i] = v and #v or -1
        end
        out[n + 1] = struct.pack(header, #id, unpack(lengths))
        out[n + 2] = id
        n = n + 2
        for i = 1, #names do
            n = n + 1
            out[n] = values[i] or ''
        end
    else
        redis.call('LREM', KEYS[2], 1, id)
        out[n + 1] = struct.pack(header, #id, unpack(gone))
        out[n + 2] = id
        n = n + 2
    end
end
return table.concat(out)
