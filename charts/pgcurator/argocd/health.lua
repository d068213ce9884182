-- Argo CD health check for every pgcurator.io kind (PartitionPolicy, IndexPolicy, VectorIndex,
-- DatabaseMonitor,
-- DbTlsCert): they share one status contract (observedGeneration; conditions Ready, Progressing,
-- Degraded, each with observedGeneration).
--   Healthy      Ready is True for the current generation
--   Suspended    spec.suspend or spec.dryRun: the plan is on the status, nothing is applied
--   Progressing  the operator has not seen this generation yet, work is under way, or the
--                failure is transient (the operator retries by itself with backoff)
--   Degraded     a failure that needs a person: wrong spec, missing table or Secret, refused DDL
local hs = {}
local transient = {
  DatabaseUnreachable = true,  -- network or server restart: retried with backoff
  ConnectionRefused = true,    -- e.g. too many connections: retried
  WaitingForLock = true,       -- another session holds a conflicting lock: retried
}

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end

local function current(c)
  return c ~= nil and c.status == "True" and
    (generation == nil or c.observedGeneration == nil or c.observedGeneration == generation)
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local ready = conditions["Ready"]
local progressing = conditions["Progressing"]
local degraded = conditions["Degraded"]

if current(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if current(degraded) then
  if transient[degraded.reason] then
    hs.status = "Progressing"
    hs.message = "Retrying: " .. describe(degraded)
  else
    hs.status = "Degraded"
    hs.message = describe(degraded)
  end
  return hs
end
if current(progressing) then
  if progressing.reason == "Suspended" or progressing.reason == "DryRun" then
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
  hs.message = describe(progressing)
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
