-- started.lua: tell a job's producer that a node took these batches of calls
-- (Executor.submit, call mode "c": their futures turn running), or handed them
-- back unrun (they turn pending again: another node may take them, and
-- Future.cancel() can still take them back, lua/cancel_call.lua). Written only
-- while the job is active, so that the events stream of a job that ended (and
-- expires) is never created again.
--
-- KEYS[1]  taskfan:{j:ID}:meta    job meta hash (state)
-- KEYS[2]  taskfan:{j:ID}:events  events stream: "<ARGV[1]>=<batch index>" per batch
-- ARGV[1]  "s" (taken) or "h" (handed back)
-- ARGV[2..] the batch indexes
--
-- Returns how many events it added.
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then
  return 0
end
if ARGV[1] ~= 's' and ARGV[1] ~= 'h' then
  return redis.error_reply('started.lua: ARGV[1] must be s or h')
end
for i = 2, #ARGV do
  redis.call('XADD', KEYS[2], '*', ARGV[1], ARGV[i])
end
return #ARGV - 1
