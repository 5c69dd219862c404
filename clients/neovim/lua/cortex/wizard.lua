-- :CortexFinetune, the guide's wizard with vim.ui.select / vim.ui.input. Runs in a coroutine
-- (cortex.run); each question passes `kind = "cortex.<step>"` (select) or `cortex_step` (input)
-- so scripts and tests can answer by step.
local cortex = require("cortex")
local format = require("cortex.format")

local M = {}

local PRESETS = {
  { value = "quick", label = "Quick    (fast experimentation)" },
  { value = "balanced", label = "Balanced (recommended for most cases)" },
  { value = "quality", label = "Quality  (best results, longer training)" },
  { value = "expert", label = "Expert   (full customization)" },
}
local EXPERT_FIELDS = {
  { "epochs", "Epochs" }, { "learningRate", "Learning rate" }, { "loraRank", "LoRA rank" },
  { "loraAlpha", "LoRA alpha" }, { "loraDropout", "LoRA dropout" }, { "batchSize", "Batch size" },
  { "gradAccumulationSteps", "Gradient accumulation steps" }, { "numLayers", "Layers with adapters" },
  { "maxSeqLength", "Max sequence length" }, { "quantizationBits", "Quantization bits (none, 4 or 8)" },
  { "fineTuneType", "Fine-tune type (lora, dora, full)" },
}
M.EXPERT_FIELDS = EXPERT_FIELDS

local function abort() error("cortex: aborted", 0) end

local function say(message, level) cortex.notify(message, level) end

local function select(step, prompt, items, format_item)
  local item = cortex.select(items, { prompt = prompt, kind = "cortex." .. step, format_item = format_item })
  if item == nil then abort() end
  return item
end

local function input(step, prompt, default)
  local text = cortex.input({ prompt = prompt .. ": ", default = default, cortex_step = step })
  if text == nil then abort() end
  return text
end

local function confirm(step, prompt)
  local answer = cortex.select({ "Yes", "No" }, { prompt = prompt, kind = "cortex." .. step })
  return answer == "Yes"
end

--- Turn an Expert answer into a JSON value: numbers, booleans, null ("none"), or text.
function M.parse_value(text)
  local lowered = vim.trim(text):lower()
  if lowered == "" or lowered == "none" or lowered == "null" then return vim.NIL end
  local ok, value = pcall(vim.fn.json_decode, lowered)
  if ok and value ~= nil then return value end
  return vim.trim(text)
end

local function expand(path) return vim.fn.fnamemodify(vim.fn.expand(path), ":p") end

local function home()
  return cortex.config.cortex_home or vim.env.CORTEX_HOME or (vim.loop.os_homedir() .. "/.cortex")
end

-- Step 1 ----------------------------------------------------------------------------------------

local function select_model(state)
  while true do
    local items = {}
    for _, m in ipairs(cortex.call("cortex/listModels").models) do
      if m.kind ~= "fine-tuned" and (m.error == nil or m.error == vim.NIL) then table.insert(items, m) end
    end
    table.insert(items, { name = "Enter a path…", path = false })
    local choice = select("model", "Step 1: Select base model", items, function(m)
      return m.path and format.model(m) or m.name
    end)
    local path = choice.path or expand(input("modelPath", "Path to a model directory"))
    local info, err = cortex.request("cortex/inspectModel", { path = path })
    if info then
      state.model = info
      say(string.format("✓ Model: %s (%s, %s params, %s)", info.name, format.capitalize(info.category),
        format.params(info.parameters), format.bytes(info.sizeBytes)))
      return
    end
    say("✗ " .. err.message, vim.log.levels.ERROR)
  end
end

-- Step 2 ----------------------------------------------------------------------------------------

local function create_dataset()
  local path = expand(input("createPath", "Save the new dataset as", home() .. "/datasets/my-dataset.jsonl"))
  local examples = {}
  while true do
    local prompt = input("examplePrompt", string.format("Example %d prompt (or 'done')", #examples + 1))
    if vim.trim(prompt):lower() == "done" then
      if #examples == 0 then
        say("Add at least one example.", vim.log.levels.WARN)
      elseif #examples >= 5 or not confirm("addMore", string.format(
          "Only %d examples; at least 5 are recommended. Add more?", #examples)) then
        break
      end
    elseif vim.trim(prompt) ~= "" then
      local response = input("exampleResponse", "Response")
      if vim.trim(response) == "" then
        say("A response cannot be empty; enter the example again.", vim.log.levels.WARN)
      else
        table.insert(examples, { prompt = prompt, response = response })
      end
    end
  end
  local result, err = cortex.request("cortex/createDataset", { path = path, examples = examples })
  if err and err.data and err.data.code == "file-exists" then
    if not confirm("overwrite", path .. " exists. Overwrite it?") then abort() end
    result = cortex.call("cortex/createDataset", { path = path, examples = examples, overwrite = true })
  elseif err then
    error(err.message, 0)
  end
  for _, warning in ipairs(result.warnings or {}) do say("⚠ " .. warning, vim.log.levels.WARN) end
  say(string.format("✓ Saved %d examples to %s", result.examples, result.path))
  return result.path
end

local function validate(state, path)
  local report, err = cortex.request("cortex/validateDataset", { path = path })
  if not report then
    say("✗ " .. err.message, vim.log.levels.ERROR)
    return false
  end
  local errors, lines = 0, {}
  local name = vim.fn.fnamemodify(path, ":t")
  for i, d in ipairs(report.diagnostics) do
    if (d.severity or 1) == 1 then errors = errors + 1 end
    if i <= 20 then table.insert(lines, "  " .. format.diagnostic(name, d)) end
  end
  if not report.ok or errors > 0 then
    table.insert(lines, 1, string.format("✗ Dataset has %d error(s); fix them and try again.", errors))
    say(table.concat(lines, "\n"), vim.log.levels.ERROR)
    return false
  end
  if #lines > 0 then say(table.concat(lines, "\n"), vim.log.levels.WARN) end
  say(string.format("✓ Dataset validated: %d examples", report.examples))
  state.dataset, state.examples = path, report.examples
  return true
end

local function prepare_data(state, opts)
  while true do
    local option = select("dataOption", "Step 2: Prepare training data", {
      { value = "file", label = "Use existing file" },
      { value = "create", label = "Create dataset interactively" },
      { value = "sample", label = "Use sample dataset" },
    }, function(o) return o.label end).value
    local path
    if option == "file" then
      local current = vim.api.nvim_buf_get_name(0)
      path = expand(input("datasetPath", "Enter path to dataset", current ~= "" and current or nil))
    elseif option == "create" then
      path = create_dataset()
    else
      local written = cortex.call("cortex/sampleDataset", { path = home() .. "/datasets/sample_dataset.jsonl", overwrite = true })
      say("✓ Sample dataset written to " .. written.path)
      path = written.path
    end
    if validate(state, path) then return end
  end
end

-- Step 3 ----------------------------------------------------------------------------------------

local function propose(state, preset, overrides)
  local params = { model = state.model.path, dataset = state.dataset, preset = preset }
  if overrides and next(overrides) then params.overrides = overrides end
  return cortex.request("cortex/proposeConfig", params)
end

local function ask_expert(state, fields)
  local proposed = cortex.call("cortex/proposeConfig", { model = state.model.path, dataset = state.dataset, preset = "expert" }).config
  for _, field in ipairs(fields) do
    local key, label = field[1], field[2]
    local current = state.overrides[key]
    if current == nil then current = proposed[key] end
    local shown = (current == nil or current == vim.NIL) and "none" or tostring(current)
    local value = M.parse_value(input("expert." .. key, "  " .. label, shown))
    if vim.deep_equal(value, proposed[key] == nil and vim.NIL or proposed[key]) then
      state.overrides[key] = nil
    else
      state.overrides[key] = value
    end
  end
end

local function configure(state)
  local detected = cortex.call("cortex/proposeConfig", { model = state.model.path, dataset = state.dataset })
  local data = detected.dataset or {}
  say(table.concat({
    "Smart Configuration detected:",
    string.format("  Model: %s (%s params, %s)", format.capitalize(state.model.category), format.params(state.model.parameters), format.bytes(state.model.sizeBytes)),
    string.format("  Dataset: %s (%s examples)", format.capitalize(data.sizeClass), data.examples or state.examples),
    string.format("  Task type: %s", format.capitalize(data.taskType)),
  }, "\n"))
  state.preset = select("preset", "Step 3: Select training preset", PRESETS, function(p) return p.label end).value
  state.overrides = {}
  if state.preset == "expert" then ask_expert(state, EXPERT_FIELDS) end
  while true do
    local proposal, err = propose(state, state.preset, state.overrides)
    if proposal then
      state.proposal = proposal
      break
    end
    say("✗ " .. err.message, vim.log.levels.ERROR)
    local field = tostring(err.data and err.data.field or ""):gsub("^overrides%.", "")
    local named = vim.tbl_filter(function(f) return f[1] == field end, EXPERT_FIELDS)
    if state.preset ~= "expert" then error(err.message, 0) end
    ask_expert(state, #named > 0 and named or EXPERT_FIELDS)
  end
  local lines = { "⚡ Smart configuration applied:" }
  for _, note in ipairs(state.proposal.explanations) do table.insert(lines, "   " .. note) end
  say(table.concat(lines, "\n"))
end

-- Step 4, summary, training, result ------------------------------------------------------------

local function name_model(state)
  local taken = vim.tbl_map(function(m) return m.name end, cortex.call("cortex/listModels").models)
  local suggestion = format.suggest_name(state.model.name, taken)
  while true do
    local name = input("name", "Step 4: Enter name for fine-tuned model", suggestion)
    local problem = format.name_problem(name, taken)
    if not problem then
      state.name = name
      return
    end
    say("✗ " .. problem, vim.log.levels.ERROR)
  end
end

local function try_it(state, final)
  if not confirm("tryIt", string.format("Load '%s' now?", state.name)) then return end
  state.replies = {}
  while true do
    local prompt = cortex.input({ prompt = "> ", cortex_step = "chatPrompt" })
    if prompt == nil or vim.trim(prompt) == "" then return end
    local reply = cortex.call("cortex/generate", { model = state.name, prompt = prompt, maxTokens = state.max_tokens or 96 })
    table.insert(state.replies, reply.text)
    say(string.format("%s: %s", state.name, reply.text ~= "" and reply.text or "(empty reply)"))
  end
end

local function train(state)
  local token = "cortex-nvim-" .. vim.loop.hrtime()
  local params = { model = state.model.path, dataset = state.dataset, outputName = state.name,
    preset = state.preset, workDoneToken = token }
  if next(state.overrides) then params.config = state.overrides end
  say("⚡ Starting fine-tuning...")
  local started = cortex.call("cortex/startTraining", params)
  state.job_id = started.jobId
  local final = cortex.await_job(started.jobId)
  state.final = final
  if final.state ~= "completed" then
    say(string.format("✗ Training %s: %s (resume with: cortex-finetune resume %s)", final.state, final.message or "", final.jobId),
      vim.log.levels.ERROR)
    return
  end
  local lines = {
    "✓ Fine-tuning completed!",
    "📁 Model saved to: " .. (final.outputPath or started.outputPath),
    "💡 To load your fine-tuned model:",
    "   cortex-finetune chat " .. state.name,
    "   LoRA adapter size: " .. format.bytes(final.adapterBytes),
    "   Base model: " .. state.model.name,
  }
  vim.list_extend(lines, format.evaluation(final))
  say(table.concat(lines, "\n"))
  try_it(state, final)
end

--- Run the wizard (inside cortex.run). Returns the state table; `state.result` says how it ended.
function M.run(opts)
  local state = { overrides = {}, max_tokens = opts.max_tokens }
  M.last = state
  local ok, err = pcall(function()
    select_model(state)
    prepare_data(state, opts)
    configure(state)
    name_model(state)
    local summary = format.summary({ base_model = state.model.name, output_name = state.name, dataset = state.dataset,
      examples = state.examples, preset = state.preset, proposal = state.proposal })
    say("[Training Summary]\n  " .. table.concat(summary, "\n  "))
    if not confirm("confirm", "Start fine-tuning?") then
      say("Fine-tuning not started.")
      state.result = "not-started"
      return
    end
    train(state)
    state.result = state.final and state.final.state or "failed"
  end)
  if not ok then
    if tostring(err):find("cortex: aborted", 1, true) then
      state.result = "aborted"
      say("Wizard cancelled.")
    else
      state.result = "error"
      state.error = err
      error(err, 0)
    end
  end
  return state
end

return M
