-- Human-readable numbers and lines, the same as the terminal wizard (cortex_rpc/units.py).
local M = {}

function M.params(count)
  if not count or count == 0 or count == vim.NIL then return "?" end
  for _, unit in ipairs({ { "T", 1e12 }, { "B", 1e9 }, { "M", 1e6 } }) do
    if count >= unit[2] then return string.format("%.1f%s", count / unit[2], unit[1]) end
  end
  return string.format("%.0fK", count / 1e3)
end

function M.bytes(size)
  if size == nil or size == vim.NIL then return "?" end
  if math.abs(size) < 1000 then return string.format("%d B", size) end
  local unit
  for _, u in ipairs({ "KB", "MB", "GB", "TB" }) do
    unit = u
    size = size / 1000
    if math.abs(size) < 1000 then break end
  end
  return string.format("%.1f %s", size, unit)
end

function M.duration(seconds)
  local total = math.max(0, math.floor(seconds + 0.5))
  local hours, minutes, secs = math.floor(total / 3600), math.floor(total % 3600 / 60), total % 60
  if hours > 0 then return string.format("%dh %02dm", hours, minutes) end
  if minutes > 0 then return string.format("%dm %02ds", minutes, secs) end
  return string.format("%ds", secs)
end

--- Like Python's {:g}: 0.0001 -> 1e-4, 3 -> 3.
function M.number(value)
  if value ~= 0 and math.abs(value) < 1e-3 then
    local mantissa, exponent = string.format("%e", value):match("^(.-)e(.*)$")
    mantissa = mantissa:gsub("%.?0+$", "")
    return mantissa .. "e" .. tostring(tonumber(exponent))
  end
  return string.format("%g", value)
end

function M.capitalize(text)
  if type(text) ~= "string" or text == "" then return "?" end
  return text:sub(1, 1):upper() .. text:sub(2)
end

local function present(v) return v ~= nil and v ~= vim.NIL end

function M.epoch(event)
  if not present(event.totalEpochs) or event.totalEpochs == 0 then return nil end
  local total = math.max(1, math.ceil(event.totalEpochs - 1e-9))
  local current = math.min(total, math.max(1, math.ceil(present(event.epoch) and event.epoch or 0)))
  return string.format("Epoch %d/%d", current, total)
end

--- `Epoch 1/2 | step 5/18 | Loss 6.8356 | 9534 tok/s | ETA 3s`
function M.progress(event)
  if event.state ~= "running" then
    return present(event.message) and event.message or M.capitalize(event.state)
  end
  local parts = {}
  local epoch = M.epoch(event)
  if epoch then table.insert(parts, epoch) end
  if present(event.totalIterations) then
    table.insert(parts, string.format("step %d/%d", event.iteration or 0, event.totalIterations))
  end
  if present(event.trainLoss) then table.insert(parts, string.format("Loss %.4f", event.trainLoss)) end
  if present(event.valLoss) then table.insert(parts, string.format("Val %.4f", event.valLoss)) end
  -- Preference training (DPO/ORPO): reward accuracy and margin when the event has them.
  if present(event.rewardAccuracy) then
    table.insert(parts, string.format("Acc %d%%", math.floor(100 * event.rewardAccuracy + 0.5)))
  end
  if present(event.margin) then table.insert(parts, string.format("Margin %.3f", event.margin)) end
  if present(event.tokensPerSecond) and event.tokensPerSecond > 0 then
    table.insert(parts, string.format("%d tok/s", math.floor(event.tokensPerSecond + 0.5)))
  end
  if present(event.etaSeconds) then table.insert(parts, "ETA " .. M.duration(event.etaSeconds)) end
  if #parts == 0 then return present(event.message) and event.message or "Training" end
  return table.concat(parts, " | ")
end

--- `Cortex: Epoch 1/2 · loss 6.836` for statuslines.
function M.status(event)
  if event.state == "running" then
    local parts = {}
    local epoch = M.epoch(event)
    if epoch then table.insert(parts, epoch) end
    if present(event.trainLoss) then table.insert(parts, string.format("loss %.3f", event.trainLoss)) end
    if present(event.rewardAccuracy) then
      table.insert(parts, string.format("acc %d%%", math.floor(100 * event.rewardAccuracy + 0.5)))
    end
    return "Cortex: " .. (#parts > 0 and table.concat(parts, " · ") or "starting")
  end
  return string.format("Cortex: %s %s", event.outputName or "job", event.state)
end

local SEVERITY = { "error", "warning", "info", "hint" }

--- `data.jsonl:3:1: error [json-syntax] Invalid JSON ...` (1-based).
function M.diagnostic(file, d)
  return string.format("%s:%d:%d: %s [%s] %s", file, d.range.start.line + 1, d.range.start.character + 1,
    SEVERITY[d.severity or 1] or "error", present(d.code) and d.code or "?", d.message)
end

function M.model(m)
  if present(m.error) then return m.name .. "  (unreadable: " .. m.error .. ")" end
  local kind = m.kind == "fine-tuned" and "  fine-tuned" or ""
  return string.format("%-28s %-7s %7s params  %s%s", m.name, M.capitalize(present(m.category) and m.category or nil),
    M.params(m.parameters), M.bytes(m.sizeBytes), kind)
end

--- The guide's Training Summary block.
function M.summary(s)
  local c, p = s.proposal.config, s.proposal
  local batch = tostring(c.batchSize)
  if present(c.gradAccumulationSteps) and c.gradAccumulationSteps > 1 then
    batch = batch .. string.format(" (x%d acc.)", c.gradAccumulationSteps)
  end
  local rows = {
    { "Base model", s.base_model }, { "Output model", s.output_name },
    { "Dataset", string.format("%s (%d examples)", vim.fn.fnamemodify(s.dataset, ":t"), s.examples) },
    { "", "" },
    { "Model size", string.format("%s (%s params)", M.capitalize(p.model.category), M.params(p.model.parameters)) },
    { "Task type", M.capitalize(p.dataset and p.dataset.taskType) },
    { "Config source", "Smart " .. M.capitalize(s.preset) },
    { "", "" },
    { "Epochs", string.format("%s (%d iterations)", M.number(c.epochs), c.iterations) },
    { "Learning rate", M.number(c.learningRate) },
    { "LoRA rank", tostring(c.loraRank) },
    { "Batch size", batch },
  }
  if present(c.quantizationBits) then table.insert(rows, { "Quantization", c.quantizationBits .. "-bit (QLoRA)" }) end
  local lines = {}
  for _, row in ipairs(rows) do
    table.insert(lines, row[1] == "" and "" or string.format("%-15s%s", row[1] .. ":", row[2]))
  end
  if p.estimate and p.estimate ~= vim.NIL and present(p.estimate.seconds) then
    table.insert(lines, "")
    -- The basis says whether the estimate comes from this machine's runs or the prior model.
    local line = "Estimated time: ~" .. M.duration(p.estimate.seconds)
    if type(p.estimate.basis) == "string" and p.estimate.basis ~= "" then
      line = line .. " (" .. vim.split(p.estimate.basis, "; ", { plain = true })[1] .. ")"
    end
    table.insert(lines, line)
  end
  return lines
end

--- Evaluation and loss-curve lines of the result step (empty when the job recorded neither).
function M.evaluation(final)
  local lines, e = {}, final.evaluation
  if present(e) and present(e.basePerplexity) and present(e.perplexity) then
    table.insert(lines, string.format("   Validation perplexity: %.1f -> %.1f (loss %.3f -> %.3f)",
      e.basePerplexity, e.perplexity, e.baseValLoss, e.valLoss))
  end
  if present(final.lossCurvePath) then table.insert(lines, "   Loss curve: " .. final.lossCurvePath) end
  return lines
end

-- Model names: the server's rules (cortex_rpc/paths.py), checked while asking.
local RESERVED = { con = 1, prn = 1, aux = 1, nul = 1, com1 = 1, com2 = 1, com3 = 1, com4 = 1, lpt1 = 1, lpt2 = 1,
  lpt3 = 1, jobs = 1, tmp = 1, models = 1, mlx_models = 1, cache = 1 }

function M.name_problem(name, taken)
  if not name or name == "" then return "Enter a name" end
  if #name > 96 then return "The name is " .. #name .. " characters long; use at most 96" end
  if name:find("[/\\%z]") or name:find("..", 1, true) then return "Use a plain name, not a path (no '/', '\\' or '..')" end
  if not name:match("^[%w][%w%._%-]*$") then
    return "Use only letters, digits, '.', '_' and '-', starting with a letter or digit"
  end
  if RESERVED[(name:lower():match("^[^.]*"))] then return "'" .. name .. "' is a reserved name; choose another" end
  if taken and vim.tbl_contains(taken, name) then return "A model named '" .. name .. "' already exists" end
  return nil
end

function M.suggest_name(base, taken)
  -- A hub repo id ORG/NAME (or LM Studio's PUBLISHER/MODEL) keeps only NAME, as the server does.
  base = base:gsub("/+$", ""):match("([^/]*)$") or base
  local cleaned = base:gsub("[^%w%._%-]+", "-"):gsub("^[%.%-_]+", ""):gsub("[%.%-_]+$", "")
  if cleaned == "" then cleaned = "model" end
  local suggestion = cleaned:sub(1, 89) .. "-custom"
  local candidate, n = suggestion, 2
  while taken and vim.tbl_contains(taken, candidate) and n < 100 do
    candidate = suggestion .. "-" .. n
    n = n + 1
  end
  return candidate
end

-- Training preview (cortex/trainingPreview) -----------------------------------------------------

--- `12,345`
function M.count(n)
  local text = tostring(math.floor(tonumber(n) or 0))
  local sign, digits = text:match("^(-?)(%d+)$")
  if not digits then return text end
  return sign .. digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
end

--- The record at `line` (0-based): the one starting there, else the last one before it, else the first.
function M.record_at(records, line)
  local best
  for _, r in ipairs(records) do
    if r.line == line then return r end
    if r.line <= line and (not best or r.line > best.line) then best = r end
  end
  return best or records[1]
end

--- `120 tokens, 48 trained, cut: no`, or `..., cut: yes (12 trained tokens lost)`.
function M.preview_header(r)
  local lost = ""
  if r.truncated and present(r.lostTrainedTokens) and r.lostTrainedTokens > 0 then
    lost = string.format(" (%s trained token%s lost)", M.count(r.lostTrainedTokens), r.lostTrainedTokens == 1 and "" or "s")
  end
  return string.format("%s tokens, %s trained, cut: %s%s", M.count(r.tokens), M.count(r.trainedTokens), r.truncated and "yes" or "no", lost)
end

--- `warning [code] message (turn 2)` (turns shown 1-based).
function M.issue(i)
  local turn = type(i.turn) == "number" and string.format(" (turn %d)", i.turn + 1) or ""
  return string.format("%s [%s] %s%s", i.severity or "?", i.code or "?", i.message or "", turn)
end

M.TEXT_START = "──── rendered text (highlighted: trained) ────"
M.TEXT_END = "──── end of record ────"

--- A record as buffer lines, with the trained ranges as { row, col, end_row, end_col } (0-based,
--- byte columns, end exclusive) for extmarks.
function M.training_preview(r, opts)
  opts = opts or {}
  local header = M.preview_header(r)
  local where = opts.source and string.format("%s, line %d", opts.source, r.line + 1) or string.format("line %d", r.line + 1)
  if opts.model then where = where .. " · model " .. opts.model end
  local lines = { header, where }
  local o = opts.options
  if type(o) == "table" then
    table.insert(lines, string.format("trainOn: %s · trainTemplateText: %s · maxSeqLength: %s", tostring(o.trainOn),
      o.trainTemplateText and "yes" or "no", tostring(o.maxSeqLength)))
  end
  table.insert(lines, "")
  table.insert(lines, M.TEXT_START)
  local first_text_row = #lines
  table.insert(lines, "")
  local trained = {}
  local rendered = false
  for _, segment in ipairs(r.segments or {}) do
    if type(segment.text) == "string" and segment.text ~= "" then
      rendered = true
      local start_row, start_col = #lines - 1, #lines[#lines]
      local pieces = vim.split(segment.text, "\n", { plain = true })
      lines[#lines] = lines[#lines] .. pieces[1]
      for k = 2, #pieces do table.insert(lines, pieces[k]) end
      local end_row, end_col = #lines - 1, #lines[#lines]
      if segment.trained and (end_row > start_row or end_col > start_col) then
        local last = trained[#trained]
        if last and last[3] == start_row and last[4] == start_col then
          last[3], last[4] = end_row, end_col
        else
          table.insert(trained, { start_row, start_col, end_row, end_col })
        end
      end
    end
  end
  if not rendered then lines[#lines] = "(nothing rendered)" end
  -- The end marker on a line of its own.
  if lines[#lines] == "" and #lines > first_text_row + 1 then lines[#lines] = M.TEXT_END else table.insert(lines, M.TEXT_END) end
  table.insert(lines, "")
  if r.truncated then
    local max = type(o) == "table" and present(o.maxSeqLength) and (" at maxSeqLength " .. M.count(o.maxSeqLength)) or ""
    table.insert(lines, "Cut" .. max .. ": the text stops where the trainer cuts it; the rest is never seen.")
    table.insert(lines, "")
  end
  local issues = r.issues or {}
  if #issues > 0 then
    table.insert(lines, string.format("Issues (%d):", #issues))
    for _, i in ipairs(issues) do table.insert(lines, "  " .. M.issue(i)) end
  else
    table.insert(lines, (r.trainedTokens or 0) > 0 and "No issues." or "No issues reported, but nothing in this record is trained.")
  end
  return { lines = lines, trained = trained, header = header }
end

return M
