-- _end_job.lua: shared by the job scripts (taskfan/scripts.py puts it in front
-- of record.lua, seal.lua and cancel.lua when it loads them).
--
-- end_job(state, now, ttl): move the job whose keys are KEYS[1..3] (meta,
-- results, events) to its final state, tell waiters (an "end" event), and give
-- all three keys the job's result TTL (none when ttl is 0 or missing).
-- Anyone can write a meta hash: a TTL that is not a whole number, or more than
-- MAX_RESULT_TTL (taskfan/bounds.py: ten years), is cut to one, since EXPIRE
-- refuses it with an error that would stop the script half-way.
local MAX_RESULT_TTL = 315360000
local function end_job(state, now, ttl)
  redis.call('HSET', KEYS[1], 'state', state, 'finished_at', now)
  redis.call('XADD', KEYS[3], '*', 'end', state)
  ttl = tonumber(ttl)
  if ttl and ttl > 0 then
    ttl = math.min(math.floor(ttl), MAX_RESULT_TTL)
    for i = 1, 3 do
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end

