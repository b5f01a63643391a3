-- _rounds.lua: shared by the scripts that open retry rounds (taskfan/scripts.py
-- puts it in front of open_round.lua and record.lua when it loads them).
--
-- A retry round (Job.retry_failed, or a dead letter requeued) opens in two
-- steps, because its entries go to the queue slot and its counters live in the
-- job slot, and no script spans both:
--
-- 1. retry.lua or requeue.lua *prepares* round n in the job's meta: field
--    "prep:<n>" holds what opening it changes (JSON, below); the job is left
--    as it was (finished, its failures counted, its keys expiring).
-- 2. The producer queues the round's entries, all in one MULTI.
-- 3. open_round(n) *opens* it: by the producer, or by the first node that
--    records one of its entries (record.lua), whichever comes first. Opening is
--    idempotent, and refused (the round is void: its entries' results are
--    dropped) when another round opened since the prepare.
--
-- A crash between any two steps leaves the job as it was, or (once an entry is
-- queued) fully in its new round as soon as a node records that entry.
--
-- prep:<n> = {"items": items that stop counting as failed, "entries": entries
-- the round queues, "batches": JSON list of the batch indexes it retries (a
-- string), "base": the job's retry_round when prepared (compare-and-set),
-- "finished": true when the job must still be finished (retry_failed),
-- "dead": the dead letter's id (requeue)}
--
-- KEYS[1..3] are the job's meta, results and events.

-- The next free round number: above every round opened or prepared.
local function reserve_round()
  local meta = redis.call('HMGET', KEYS[1], 'retry_round', 'retry_next')
  local n = math.max(tonumber(meta[1]) or 0, tonumber(meta[2]) or 0) + 1
  redis.call('HSET', KEYS[1], 'retry_next', n)
  return n
end

-- Open prepared round n; returns n when it is open (now or before), 0 when it
-- can never open (void: superseded, or never prepared).
local function open_round(n)
  local name = 'round:' .. n
  if redis.call('HEXISTS', KEYS[1], name) == 1 then
    return n
  end
  local raw = redis.call('HGET', KEYS[1], 'prep:' .. n)
  if not raw then
    return 0
  end
  local prep = cjson.decode(raw)
  local meta = redis.call('HMGET', KEYS[1], 'state', 'retry_round')
  local state = meta[1]
  local fits = (tonumber(meta[2]) or 0) == prep.base and (state == 'active' or state == 'finished')
  if prep.finished and state ~= 'finished' then
    fits = false
  end
  if not fits then
    redis.call('HDEL', KEYS[1], 'prep:' .. n)
    return 0
  end
  -- Every other prepared round is superseded by this one: forget them.
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, 5) == 'prep:' then
      redis.call('HDEL', KEYS[1], field)
    end
  end
  redis.call('HSET', KEYS[1], 'retry_round', n, name, prep.batches)
  redis.call('HINCRBY', KEYS[1], 'failed', -prep.items)
  redis.call('HINCRBY', KEYS[1], 'retry_batches', prep.entries)
  if prep.dead then
    redis.call('HSET', KEYS[1], 'dead:' .. prep.dead, n)
  end
  if state == 'finished' then
    redis.call('HSET', KEYS[1], 'state', 'active')
    redis.call('HDEL', KEYS[1], 'finished_at')
    for i = 1, 3 do
      redis.call('PERSIST', KEYS[i])
    end
  end
  redis.call('XADD', KEYS[3], '*', 'retry', n)
  return n
end

