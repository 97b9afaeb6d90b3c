-- Argo CD health check for selftaught.dev/SelfTaughtRun.
--
-- Installed through the argocd-cm key
--   resource.customizations.health.selftaught.dev_SelfTaughtRun
-- (see argocd-values-snippet.yaml, generated from this file by
-- tests/gitops/test_argocd_health.py; edit this file, not the snippet).
--
-- Argo CD runs scripts from argocd-cm in gopher-lua (Lua 5.1) with only the
-- base, package, table and a reduced os library loaded: no string.* or math.*
-- and no ("s"):method() calls. Keep to `..`, tostring() and tonumber().
local hs = {}

local function nonempty(s)
  if s ~= nil and s ~= "" then
    return s
  end
  return nil
end

local function findCondition(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

-- "Reason: message", or whichever half is present, or the fallback.
local function describe(c, fallback)
  local reason = nonempty(c.reason)
  local message = nonempty(c.message)
  if reason ~= nil and message ~= nil then
    return reason .. ": " .. message
  end
  return message or reason or fallback
end

local metadata = obj.metadata or {}
local status = obj.status
local generation = tonumber(metadata.generation)
local observed = nil
if status ~= nil then
  observed = tonumber(status.observedGeneration)
end

-- The operator has not looked at the current spec yet: every other field in
-- status describes an older generation (or there is no status at all).
if status == nil or observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  else
    hs.message = "waiting for the operator to report status"
  end
  return hs
end

local conditions = status.conditions

local succeeded = findCondition(conditions, "Succeeded")
if succeeded ~= nil and succeeded.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(succeeded, "run failed")
  return hs
end

-- A refused edit: the run goes on (or finished) with its old spec, so what
-- Git says is not what ran. Checked before success for that reason.
local accepted = findCondition(conditions, "SpecAccepted")
if accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(accepted, "spec edit refused")
  return hs
end

if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = nonempty(succeeded.message) or nonempty(status.message) or "run succeeded"
  return hs
end

local suspended = findCondition(conditions, "Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = nonempty(suspended.message) or nonempty(status.message) or "run is suspended"
  return hs
end

hs.status = "Progressing"
hs.message = nonempty(status.message)
if hs.message == nil then
  if status.stage ~= nil and status.iteration ~= nil then
    hs.message = "iteration " .. tostring(status.iteration) .. ": " .. tostring(status.stage)
  elseif status.stage ~= nil then
    hs.message = tostring(status.stage)
  else
    hs.message = ""
  end
end
return hs
