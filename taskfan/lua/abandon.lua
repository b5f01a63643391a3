-- abandon.lua: end a job whose producer stopped renewing its enqueue lease
-- (killed mid-enqueue): the job becomes "abandoned", waiters see end=abandoned,
-- nodes skip its remaining batches, and its keys get the result TTL. Anyone may
-- call it (nodes at their heartbeat, readers of the job); it changes nothing
-- unless the job is active, unsealed, and its lease_until (server clock, see
-- lease.lua) has passed.
--
-- KEYS[1]  taskfan:{j:ID}:meta     job meta hash
-- KEYS[2]  taskfan:{j:ID}:results  results hash (only given an expiry here)
-- KEYS[3]  taskfan:{j:ID}:events   events stream
--
-- Returns the job's state afterwards: "enqueuing" (active, unsealed, lease
-- still running), "active" (sealed), "finished", "cancelled", "abandoned", or
-- "gone" when the job does not exist.
-- end_job comes from _end_job.lua, loaded in front of this file.
local meta = redis.call('HMGET', KEYS[1], 'state', 'sealed', 'lease_until', 'result_ttl')
if not meta[1] then
  return 'gone'
end
if meta[1] ~= 'active' then
  return meta[1]
end
if meta[2] == '1' then
  return 'active'
end
local deadline = tonumber(meta[3])
if not deadline then
  return 'enqueuing' -- no lease (a job from an older producer): never abandoned
end
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
if seconds <= deadline then
  return 'enqueuing'
end
end_job('abandoned', string.format('%.6f', seconds), meta[4])
return 'abandoned'
