-- Argo CD health check for SFTJob and DatasetCuration (sft.trustdoc.io).
-- Reads the conditions the operator writes; never looks at spec.
--   Failed=True                      -> Degraded (message says why: gate, config error, ...)
--   Succeeded=True                   -> Healthy
--   Progressing, reason JobSuspended -> Suspended
--   anything else                    -> Progressing (with progress or waiting reason)
hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the operator"
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local byType = {}
for _, condition in ipairs(obj.status.conditions) do
  byType[condition.type] = condition
end
local failed = byType["Failed"]
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = failed.reason .. ": " .. (failed.message or "")
  return hs
end
local succeeded = byType["Succeeded"]
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = succeeded.message or "Succeeded"
  return hs
end
local progressing = byType["Progressing"]
if progressing ~= nil then
  if progressing.reason == "JobSuspended" then
    hs.status = "Suspended"
  end
  hs.message = progressing.reason .. ": " .. (progressing.message or "")
end
if obj.status.progress ~= nil and obj.status.progress.percent ~= nil then
  hs.message = hs.message .. string.format(" (%.1f%%)", obj.status.progress.percent)
end
return hs
