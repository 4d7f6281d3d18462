-- Argo CD health check for relab.dev/ReliabilityExperiment.
--
-- Installed as resource.customizations.health.relab.dev_ReliabilityExperiment
-- in argocd-cm (argocd-cm-patch.yaml beside this file carries this script
-- verbatim; operator/tests/argocd.rs fails when the two differ, and runs this
-- script with lua5.1 against statuses made by the operator's own code).
--
--   no status yet, or a new generation the operator has not started  Progressing
--   Pending, Provisioning, Running, Draining, Analyzing               Progressing
--   Succeeded (verdict Passed)                                        Healthy
--   Failed: verdict Failed (objectives not met)                       Degraded
--   Failed: verdict Inconclusive (the run did not test its claim)     Degraded
--   Failed: no verdict (the load generator or its Job failed)         Degraded
--   condition Suspended=True (spec.suspend)                           Suspended
--   spec.schedule, waiting for its first tick                         Healthy
--   spec.schedule suspended, no run of this spec yet                  Suspended
--   a run stopped by spec.stopWhen (Failed, reason Stopped)           Degraded
--   (a scheduled experiment's message ends with its next run)
--   condition Valid=False (the spec was refused)                      Degraded
--
-- Inconclusive is Degraded, not Progressing: the run is over and nothing
-- changes until the spec does, so Progressing would keep an Application (and
-- any sync wave behind it) waiting for ever; and a run that could not show
-- what it claimed must not look green either. The message says which.
--
-- Written for Argo CD's sandbox: gopher-lua (Lua 5.1) with only the base,
-- table and a safe os library loaded; no string.* and no math.* (so no
-- string.format: numbers are rounded with % and joined with ..).

local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- x rounded to 1/scale (scale 10000: four decimals), as text.
local function rounded(x, scale)
  x = tonumber(x)
  if x == nil then
    return "?"
  end
  local scaled = x * scale + 0.5
  return tostring((scaled - scaled % 1) / scale)
end

local function text(x)
  if x == nil then
    return "?"
  end
  return tostring(x)
end

-- The key figures of a finished run, from status.results.
local function figures(status)
  local r = status.results
  if r == nil then
    return ""
  end
  local parts = {}
  if r.successRatio ~= nil then
    table.insert(parts, "success ratio " .. rounded(r.successRatio, 10000))
  end
  if r.apiLatencyMs ~= nil and r.apiLatencyMs.p95 ~= nil then
    table.insert(parts, "API p95 " .. rounded(r.apiLatencyMs.p95, 10) .. " ms")
  end
  if r.orders ~= nil and r.orders.accepted ~= nil then
    table.insert(parts, text(r.orders.accepted) .. " accepted")
  end
  if r.invariants ~= nil then
    table.insert(parts, text(r.invariants.doubleCharges) .. " double charges")
    table.insert(parts, text(r.invariants.lostOrders) .. " lost")
  end
  return table.concat(parts, ", ")
end

-- Live figures of a running load, from status.progress.
local function progress(status)
  local p = status.progress
  if p == nil then
    return "no progress yet"
  end
  return rounded(p.elapsedSeconds, 1) .. " s elapsed, " .. text(p.sent) .. " sent, " .. text(p.paid) ..
    " paid, " .. text(p.failed) .. " failed, breaker " .. text(p.breakerState)
end

-- Objectives that were not met: "successRatio 0.9512 (>= 0.99)".
local function not_met(verdict)
  local parts = {}
  if verdict.objectives ~= nil then
    for _, o in ipairs(verdict.objectives) do
      if o.passed == false then
        table.insert(parts, text(o.name) .. " " .. text(o.observed) .. " (" .. text(o.target) .. ")")
      end
    end
  end
  return table.concat(parts, ", ")
end

-- "; next run 2026-12-07T02:00:00Z" for a scheduled experiment.
local function next_run(status)
  if status.nextRunTime == nil then
    return ""
  end
  return "; next run " .. text(status.nextRunTime)
end

local function finished(status, phase)
  local verdict = status.verdict
  local key = figures(status)
  local message
  local healthy = false
  if verdict == nil then
    if phase == "Succeeded" then
      healthy = true
      message = "Succeeded"
    else
      -- no results: the Completed condition says what went wrong
      local completed = condition(status, "Completed")
      message = "Failed without results"
      if completed ~= nil and completed.message ~= nil and completed.message ~= "" then
        message = message .. ": " .. text(completed.reason) .. ": " .. completed.message
      end
    end
  elseif verdict.result == "Passed" and phase == "Succeeded" then
    healthy = true
    message = "Succeeded: verdict Passed"
  elseif verdict.result == "Inconclusive" then
    message = phase .. ": verdict Inconclusive"
    if verdict.inconclusiveReasons ~= nil and #verdict.inconclusiveReasons > 0 then
      message = message .. " (" .. table.concat(verdict.inconclusiveReasons, "; ") .. ")"
    end
  else
    message = phase .. ": verdict " .. text(verdict.result)
    local missed = not_met(verdict)
    if missed ~= "" then
      message = message .. ", not met: " .. missed
    end
  end
  if key ~= "" then
    message = message .. "; " .. key
  end
  local r = status.results
  if r ~= nil and r.stopped ~= nil then
    message = message .. "; stopped early by " .. text(r.stopped.condition) .. " at " ..
      rounded(r.stopped.atSeconds, 10) .. " s: " .. text(r.stopped.observed)
  end
  local deleted = condition(status, "WorkloadsDeleted")
  if deleted ~= nil and deleted.status == "True" then
    message = message .. " (lab workloads deleted)"
  end
  message = message .. next_run(status)
  if healthy then
    hs.status = "Healthy"
  else
    hs.status = "Degraded"
  end
  hs.message = message
  return hs
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the relab operator (no status yet)"
  return hs
end

local generation = tonumber(obj.metadata.generation)
local observed = tonumber(status.observedGeneration)

-- A refused spec: nothing runs until the spec changes. A Valid=False left
-- from an older generation is not the answer any more (the operator has not
-- looked at the new spec yet: Progressing below).
local valid = condition(status, "Valid")
if valid ~= nil and valid.status == "False" then
  local of = tonumber(valid.observedGeneration)
  if generation == nil or of == nil or of >= generation then
    hs.status = "Degraded"
    hs.message = "Invalid spec: " .. text(valid.message)
    return hs
  end
end

if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  if observed == nil then
    hs.message = "Waiting for the relab operator to start generation " .. text(generation)
  else
    hs.message = "Waiting for the relab operator to start generation " .. text(generation) ..
      " (the status is of generation " .. text(observed) .. ")"
  end
  return hs
end

local phase = status.phase
if phase == nil then
  phase = "Pending"
end

local suspended = condition(status, "Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = "Suspended (" .. phase .. "): " .. text(suspended.message)
  return hs
end

-- A schedule waiting for the first run of this spec: nothing is wrong and
-- nothing is going on until the tick.
local scheduled = condition(status, "Scheduled")
if scheduled ~= nil and status.scheduledRun == nil and phase == "Pending" then
  if scheduled.status == "True" then
    hs.status = "Healthy"
    hs.message = "Scheduled: the first run starts at " .. text(status.nextRunTime)
  else
    hs.status = "Suspended"
    hs.message = "Schedule suspended: " .. text(scheduled.message)
  end
  return hs
end

if phase == "Succeeded" or phase == "Failed" then
  return finished(status, phase)
end

if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Pending: the run is accepted, its lab is not applied yet"
  return hs
end

if phase == "Provisioning" then
  hs.status = "Progressing"
  hs.message = "Provisioning"
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = hs.message .. ": " .. ready.message
  end
  return hs
end

if phase == "Running" or phase == "Draining" then
  hs.status = "Progressing"
  hs.message = phase .. ": " .. progress(status)
  return hs
end

if phase == "Analyzing" then
  hs.status = "Progressing"
  hs.message = "Analyzing: judging the results"
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. text(phase)
return hs
