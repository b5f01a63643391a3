-- started.lua: tell a job's producer that a node took these batches of calls
-- (Executor.submit, call mode "c"): their futures turn running. Written only
-- while the job is active, so that the events stream of a job that ended (and
-- expires) is never created again.
--
-- KEYS[1]  taskfan:{j:ID}:meta    job meta hash (state)
-- KEYS[2]  taskfan:{j:ID}:events  events stream: "s=<batch index>" per batch
-- ARGV     the batch indexes
--
-- Returns how many events it added.
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then
  return 0
end
for i = 1, #ARGV do
  redis.call('XADD', KEYS[2], '*', 's', ARGV[i])
end
return #ARGV
