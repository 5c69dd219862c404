-- Headless tests of cortex.nvim against the real server (plain Lua, no plenary).
-- Run by ../run-tests.sh: nvim --headless -u NONE -c "luafile tests/test_cortex.lua"
local root = assert(os.getenv("CORTEX_NVIM_ROOT"), "CORTEX_NVIM_ROOT")
local dir = assert(os.getenv("CORTEX_TEST_DIR"), "CORTEX_TEST_DIR")
local server = assert(os.getenv("CORTEX_RPC"), "CORTEX_RPC")
local capture = os.getenv("CORTEX_CAPTURE")
vim.opt.runtimepath:prepend(root)
vim.opt.swapfile = false

local function out(text) io.stdout:write(text .. "\n") end
local passed, failed = 0, 0
local function test(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    passed = passed + 1
    out("ok - " .. name)
  else
    failed = failed + 1
    out("not ok - " .. name .. "\n" .. tostring(err))
  end
end
local function eq(actual, expected, what)
  if not vim.deep_equal(actual, expected) then
    error(string.format("%s: expected %s, got %s", what or "value", vim.inspect(expected), vim.inspect(actual)), 2)
  end
end
local function wait_for(what, ms, cond)
  if not vim.wait(ms, cond, 50) then error("timed out waiting for " .. what, 2) end
end

-- Record notifications instead of printing them.
local notes = {}
vim.notify = function(message, level) table.insert(notes, { message = message, level = level or vim.log.levels.INFO }) end
local function noted(pattern)
  for _, n in ipairs(notes) do if n.message:find(pattern) then return n end end
end

-- Scripted vim.ui: answers by step (select: opts.kind "cortex.<step>", input: opts.cortex_step).
local DEFAULT = {}
local script, asked = {}, {}
local function answer(step)
  table.insert(asked, step)
  local queue = script[step]
  if not queue or #queue == 0 then error("unscripted step " .. step .. " after " .. table.concat(asked, ","), 0) end
  return table.remove(queue, 1)
end
vim.ui.select = function(items, opts, on_choice)
  local step = (opts.kind or ""):gsub("^cortex%.", "")
  local want = answer(step)
  for i, item in ipairs(items) do
    if (type(want) == "function" and want(item)) or item == want or (type(item) == "table" and item.value == want) then
      return on_choice(item, i)
    end
  end
  error("step " .. step .. ": no item matches " .. vim.inspect(want), 0)
end
vim.ui.input = function(opts, on_confirm)
  local want = answer(opts.cortex_step)
  on_confirm(want == DEFAULT and opts.default or want)
end

local cortex = require("cortex")
local wizard = require("cortex.wizard")
cortex.setup({ cmd = { server }, model_dirs = { dir .. "/models" }, cortex_home = dir .. "/home", progress_interval_ms = 0 })
local model_path = dir .. "/models/tiny-llama"

local function run_wizard(answers, timeout)
  script, asked, notes = answers, {}, {}
  wizard.last = nil
  cortex.last_error = nil
  vim.cmd("CortexFinetune")
  wait_for("the wizard", timeout or 120000, function()
    return cortex.last_error ~= nil or (wizard.last ~= nil and wizard.last.result ~= nil)
  end)
  if cortex.last_error then error(cortex.last_error, 0) end
  return wizard.last
end

local function codes(diagnostics)
  local list = {}
  for _, d in ipairs(diagnostics) do
    if d.severity == vim.diagnostic.severity.ERROR then table.insert(list, { d.lnum, d.code }) end
  end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  return list
end

test("a broken JSONL buffer gets native diagnostics with lines and codes", function()
  vim.cmd("edit " .. dir .. "/broken.jsonl")
  local buf = vim.api.nvim_get_current_buf()
  wait_for("diagnostics", 20000, function() return #vim.diagnostic.get(buf) > 0 end)
  eq(#vim.lsp.buf_get_clients(buf), 1, "clients attached")
  eq(codes(vim.diagnostic.get(buf)), { { 1, "missing-field" }, { 2, "json-syntax" }, { 3, "empty-field" } }, "errors")
  if capture then
    local lines = { "$ nvim broken.jsonl   (vim.diagnostic.get, Neovim " .. tostring(vim.version().major) .. "." ..
      tostring(vim.version().minor) .. "." .. tostring(vim.version().patch) .. ")" }
    local diagnostics = vim.diagnostic.get(buf)
    table.sort(diagnostics, function(a, b) return a.lnum < b.lnum end)
    for _, d in ipairs(diagnostics) do
      table.insert(lines, string.format("broken.jsonl:%d:%d: %s [%s] %s", d.lnum + 1, d.col + 1,
        ({ "E", "W", "I", "H" })[d.severity], d.code, d.message))
    end
    vim.fn.writefile(lines, capture)
  end
end)

test("editing the buffer updates the diagnostics (incremental sync)", function()
  local buf = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_lines(buf, 2, 3, false, { '{"prompt": "Fixed", "response": "Now valid."}' })
  wait_for("updated diagnostics", 20000, function()
    return vim.deep_equal(codes(vim.diagnostic.get(buf)), { { 1, "missing-field" }, { 3, "empty-field" } })
  end)
end)

test("hover on a record answers from the server", function()
  local buf = vim.api.nvim_get_current_buf()
  local responses = vim.lsp.buf_request_sync(buf, "textDocument/hover",
    { textDocument = { uri = vim.uri_from_bufnr(buf) }, position = { line = 1, character = 3 } }, 10000)
  local contents
  for _, response in pairs(responses or {}) do contents = response.result and response.result.contents end
  assert(contents ~= nil and vim.inspect(contents):len() > 4, "hover: " .. vim.inspect(responses))
end)

test(":CortexValidate fills the quickfix list and notifies", function()
  notes = {}
  cortex.last_validation = nil
  vim.cmd("CortexValidate")
  wait_for("validation", 20000, function() return cortex.last_validation ~= nil end)
  local qf = vim.fn.getqflist()
  local errors = vim.tbl_filter(function(i) return i.type == "E" end, qf)
  eq(vim.tbl_map(function(i) return i.lnum end, errors), { 2, 4 }, "quickfix lines")
  assert(errors[1].text:find("^%[missing%-field%]"), errors[1].text)
  assert(noted("Dataset has 2 error"), vim.inspect(notes))
  -- A path argument validates the file on disk (the original, with the JSON error).
  cortex.last_validation = nil
  vim.cmd("CortexValidate " .. dir .. "/broken.jsonl")
  wait_for("validation", 20000, function() return cortex.last_validation ~= nil end)
  assert(noted("broken.jsonl:3:1: error %[json%-syntax%]"), vim.inspect(notes))
  cortex.last_validation = nil
  vim.cmd("CortexValidate " .. dir .. "/good.jsonl")
  wait_for("validation", 20000, function() return cortex.last_validation ~= nil end)
  assert(noted("✓ Dataset validated: 6 examples"), vim.inspect(notes))
end)

local function skip(name, why) out("ok - " .. name .. " # SKIP " .. why) end

test("setup's model goes in init_options and settings; set_model tells the running server", function()
  local saved = cortex.config.model
  eq(cortex.client_config().settings, nil, "no settings without a model")
  eq(cortex.client_config().init_options.model, nil, "no model in init_options")
  cortex.config.model = model_path
  local config = cortex.client_config()
  eq(config.init_options.model, model_path, "init_options.model")
  eq(config.settings, { cortex = { model = model_path } }, "settings")
  local client = vim.lsp.get_client_by_id(cortex.client_id)
  local sent, notify = {}, client.notify
  client.notify = function(method, params) table.insert(sent, { method, params }) return true end
  local ok, err = pcall(function()
    eq(cortex.set_model("~/some-model"), vim.fn.expand("~/some-model"), "expanded")
    cortex.set_model(nil)
  end)
  client.notify = notify
  cortex.config.model = saved
  assert(ok, err)
  eq(sent[1], { "workspace/didChangeConfiguration", { settings = { cortex = { model = vim.fn.expand("~/some-model") } } } }, "sent")
  eq(sent[2][2].settings.cortex.model, vim.NIL, "null turns it off")
end)

local preview_result = {
  records = { {
    line = 2, tokens = 21, trainedTokens = 6, truncated = false, lostTrainedTokens = 0,
    issues = { { code = "template-no-system", severity = "warning", message = "The template drops the system turn", turn = 0 } },
    segments = {
      { text = "<|user|>\nQuestion 3?\n<|assistant|>\n", trained = false },
      { text = "Answer 3.", trained = true }, { text = "</s>", trained = true }, { text = "\n", trained = false },
    },
  } },
  summary = { records = 1, tokens = { min = 21, median = 21, p95 = 21, max = 21 }, trainedTokens = { min = 6, median = 6, max = 6, total = 6 },
    cut = 0, lostTrainedTokens = 0, untrained = 0, errors = 0 },
  options = { trainOn = "last", trainTemplateText = false, maxSeqLength = 2048, maskPrompt = true },
}

--- The trained texts of the preview buffer: what its CortexTrained extmarks cover.
local function trained_texts(buf)
  local texts = {}
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(buf, cortex.preview_ns, 0, -1, { details = true })) do
    local d = mark[4]
    if d.hl_group == "CortexTrained" then
      table.insert(texts, table.concat(vim.api.nvim_buf_get_text(buf, mark[2], mark[3], d.end_row, d.end_col, {}), "\n"))
    end
  end
  return texts
end

--- Run :CortexPreviewTraining with the request stubbed for cortex/trainingPreview (`reply`).
local function preview_with(reply)
  local real, sent = cortex.request, {}
  cortex.request = function(method, params)
    if method ~= "cortex/trainingPreview" then return real(method, params) end
    table.insert(sent, params)
    return reply
  end
  cortex.last_preview, cortex.last_error = nil, nil
  vim.cmd("CortexPreviewTraining")
  local ok = vim.wait(20000, function() return cortex.last_preview ~= nil or cortex.last_error ~= nil end, 50)
  cortex.request = real
  if cortex.last_error then error(cortex.last_error, 0) end
  assert(ok, "timed out waiting for the preview")
  return sent
end

test(":CortexPreviewTraining asks for the cursor's record and shows it, trained text highlighted", function()
  vim.cmd("tabnew " .. dir .. "/good.jsonl")
  local buf = vim.api.nvim_get_current_buf()
  wait_for("the buffer to attach", 20000, function() return vim.lsp.buf_is_attached(buf, cortex.client_id) end)
  vim.api.nvim_win_set_cursor(0, { 3, 5 })
  local saved = cortex.config.model
  cortex.config.model = model_path
  notes = {}
  local ok, err = pcall(function()
    local sent = preview_with(preview_result)
    eq(sent, { { model = model_path, uri = vim.uri_from_bufnr(buf), line = 2, limit = 1 } }, "request")
    local out = vim.api.nvim_get_current_buf()
    assert(out ~= buf and out == cortex.last_preview.buf, "a scratch split")
    local lines = vim.api.nvim_buf_get_lines(out, 0, -1, false)
    eq(lines[1], "21 tokens, 6 trained, cut: no", "header")
    eq(lines[2], "good.jsonl, line 3 · model tiny-llama", "source")
    eq(lines[3], "trainOn: last · trainTemplateText: no · maxSeqLength: 2048", "options")
    local text = table.concat(lines, "\n")
    assert(text:find("<|user|>\nQuestion 3?\n<|assistant|>\nAnswer 3.</s>\n" .. require("cortex.format").TEXT_END, 1, true), text)
    assert(text:find("Issues (1):\n  warning [template-no-system] The template drops the system turn (turn 1)", 1, true), text)
    eq(trained_texts(out), { "Answer 3.</s>" }, "trained extmarks")
    eq(vim.fn.synIDattr(vim.fn.synIDtrans(vim.fn.hlID("CortexTrained")), "name"), "DiffAdd", "CortexTrained links to DiffAdd")
    eq({ vim.bo[out].buftype, vim.bo[out].modifiable }, { "nofile", false }, "scratch, read-only")
    assert(noted("good.jsonl line 3: 21 tokens, 6 trained, cut: no"), vim.inspect(notes))
    vim.cmd("close")

    -- Without a model in setup: picked from the server's list, then remembered.
    cortex.config.model, cortex.preview_model = nil, nil
    script, asked = { previewModel = { function(m) return m.path == model_path end } }, {}
    local cut = vim.deepcopy(preview_result)
    cut.records[1].truncated, cut.records[1].lostTrainedTokens, cut.records[1].issues = true, 2, {}
    sent = preview_with(cut)
    eq(sent[1].model, model_path, "picked model")
    eq(asked, { "previewModel" }, "asked once")
    local cut_lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    eq(cut_lines[1], "21 tokens, 6 trained, cut: yes (2 trained tokens lost)", "cut header")
    assert(vim.tbl_contains(cut_lines, "No issues."), vim.inspect(cut_lines))
    vim.cmd("close")
    preview_with({ records = {}, summary = preview_result.summary, options = preview_result.options })
    eq(asked, { "previewModel" }, "not asked again")
    assert(noted("no record at line 3 of good.jsonl"), vim.inspect(notes))
  end)
  cortex.config.model, cortex.preview_model = saved, nil
  vim.cmd("tabclose")
  assert(ok, err)
end)

do
  local name = ":CortexPreviewTraining against the server with the tiny model"
  local client = vim.lsp.get_client_by_id(cortex.client_id)
  local caps = client and (client.server_capabilities or client.resolved_capabilities) or {}
  local methods = type(caps.experimental) == "table" and type(caps.experimental.cortex) == "table" and caps.experimental.cortex.methods or {}
  if not vim.tbl_contains(methods, "cortex/trainingPreview") then
    skip(name, "cortex/trainingPreview not in this server yet")
  else
    test(name, function()
      vim.cmd("tabnew " .. dir .. "/good.jsonl")
      local buf = vim.api.nvim_get_current_buf()
      wait_for("the buffer to attach", 20000, function() return vim.lsp.buf_is_attached(buf, cortex.client_id) end)
      vim.api.nvim_win_set_cursor(0, { 2, 0 })
      local saved = cortex.config.model
      cortex.config.model, cortex.last_preview, cortex.last_error = model_path, nil, nil
      vim.cmd("CortexPreviewTraining")
      local ok = vim.wait(60000, function() return cortex.last_preview ~= nil or cortex.last_error ~= nil end, 50)
      cortex.config.model = saved
      local preview, failure = cortex.last_preview, cortex.last_error
      vim.cmd("tabclose")
      if failure then error(failure, 0) end
      assert(ok and preview and preview.record, "preview " .. vim.inspect(preview))
      eq(preview.record.line, 1, "record line")
      assert(preview.rendered.lines[1]:find("^[%d,]+ tokens, [%d,]+ trained, cut: [ny][oe]s?"), preview.rendered.lines[1])
      assert(preview.record.trainedTokens > 0 and #preview.rendered.trained > 0, vim.inspect(preview.record))
    end)
  end
end

test(":CortexFinetune: sample data, Quick preset, progress, result, Try it", function()
  local state = run_wizard({
    model = { function(m) return m.path == model_path end },
    dataOption = { "sample" },
    preset = { "quick" },
    name = { DEFAULT },
    confirm = { "Yes" },
    tryIt = { "Yes" },
    chatPrompt = { "What is Python?", "" },
  })
  eq(state.result, "completed", "result " .. vim.inspect(state.error) .. vim.inspect(notes))
  eq(state.name, "tiny-llama-custom", "suggested name")
  assert(noted("✓ Dataset validated: %d+ examples"), "validated")
  assert(noted("Smart Configuration detected"), "detected")
  assert(noted("Config source: Smart Quick"), "summary")
  assert(noted("Estimated time: ~"), "estimate")
  assert(noted("tiny%-llama%-custom: Epoch %d/%d | step %d+/%d+ | Loss"), "progress " .. vim.inspect(notes))
  assert(noted("tiny%-llama%-custom: Completed"), "completed")
  assert(noted("✓ Fine%-tuning completed!"), "result")
  assert(noted("Validation perplexity: [%d.]+ %-> [%d.]+ %(loss"), "evaluation in the result step")
  assert(noted("Loss curve: .*loss%-curve%.svg"), "loss curve in the result step")
  eq(vim.fn.filereadable(dir .. "/home/mlx_models/tiny-llama-custom/fine-tuned.marker"), 1, "marker")
  eq(#state.replies, 1, "one reply")
  assert(cortex.statusline():find("^Cortex:"), cortex.statusline())
end)

test(":CortexFinetune: create data (warned under 5), Expert with a rejected value, bad names re-asked", function()
  local expert = {}
  for _, f in ipairs(wizard.EXPERT_FIELDS) do expert["expert." .. f[1]] = { DEFAULT } end
  expert["expert.epochs"] = { "1" }
  expert["expert.loraRank"] = { "-3", "4" }
  local answers = vim.tbl_extend("error", expert, {
    model = { function(m) return m.path == model_path end },
    dataOption = { "create" },
    createPath = { dir .. "/made.jsonl" },
    examplePrompt = { "What is Python?", "What is MLX?", "done", "What is LoRA?", "What is JSONL?", "What is a GPU?", "done" },
    exampleResponse = { "A language.", "An array framework.", "Low-rank adapters.", "One JSON per line.", "A graphics chip." },
    addMore = { "Yes" },
    preset = { "expert" },
    name = { "../escape", "tiny-expert" },
    confirm = { "Yes" },
    tryIt = { "No" },
  })
  local state = run_wizard(answers)
  eq(state.result, "completed", "result " .. vim.inspect(notes))
  eq(#vim.fn.readfile(dir .. "/made.jsonl"), 5, "examples written")
  eq(state.overrides, { epochs = 1, loraRank = 4 }, "overrides")
  assert(noted("loraRank"), "server refused -3")
  assert(noted("Use a plain name"), "bad name refused")
  eq(state.name, "tiny-expert", "name")
end)

test("a broken file is refused, then the sample; declining the summary starts nothing", function()
  local state = run_wizard({
    model = { function(m) return m.path == model_path end },
    dataOption = { "file", "sample" },
    datasetPath = { dir .. "/broken.jsonl" },
    preset = { "balanced" },
    name = { DEFAULT },
    confirm = { "No" },
  })
  eq(state.result, "not-started", "result")
  assert(noted("Dataset has 3 error"), vim.inspect(notes))
  assert(noted("broken.jsonl:2:1: error %[missing%-field%]"), "line numbers")
  eq(state.name, "tiny-llama-custom-2", "suggestion avoids the existing name")
end)

test(":CortexReport shows the data-quality report as Markdown", function()
  notes, cortex.last_report = {}, nil
  local data = dir .. "/report.jsonl"
  local lines = {}
  for i = 1, 6 do table.insert(lines, string.format('{"prompt": "Question %d?", "response": "Answer number %d."}', i, i)) end
  table.insert(lines, '{"prompt": "Question 1?", "response": "Answer number 1."}')
  vim.fn.writefile(lines, data)
  vim.cmd("CortexReport " .. data)
  wait_for("the report", 20000, function() return cortex.last_report ~= nil end)
  local text = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  eq(vim.bo.filetype, "markdown", "filetype")
  assert(text:find("# Dataset report: report.jsonl", 1, true), text)
  assert(text:find(string.format("**Score: %d/100**", cortex.last_report.score), 1, true), text)
  assert(cortex.last_report.score < 100 and cortex.last_report.analysis.duplicates == 1, vim.inspect(cortex.last_report.analysis))
  assert(noted("Dataset report: report.jsonl, score %d+/100"), vim.inspect(notes))
  vim.cmd("close")
end)

test(":CortexModels lists base and fine-tuned models", function()
  local seen
  script = { models = { function(m) seen = seen or {}; table.insert(seen, m.name); return m.name == "tiny-llama" end } }
  notes = {}
  vim.cmd("CortexModels")
  wait_for("inspect", 20000, function() return noted("tiny%-llama: llama") ~= nil end)
  assert(vim.tbl_contains(seen, "tiny-llama"), vim.inspect(seen))
end)

test(":CortexCancel cancels a running job", function()
  local expert = {}
  for _, f in ipairs(wizard.EXPERT_FIELDS) do expert["expert." .. f[1]] = { DEFAULT } end
  expert["expert.epochs"] = { "400" }
  script = vim.tbl_extend("error", expert, {
    model = { function(m) return m.path == model_path end },
    dataOption = { "sample" }, preset = { "expert" }, name = { "tiny-long" }, confirm = { "Yes" },
  })
  asked, notes, wizard.last, cortex.last_error = {}, {}, nil, nil
  vim.cmd("CortexFinetune")
  wait_for("the job to run", 60000, function()
    local s = wizard.last
    local job = s and s.job_id and cortex.jobs[s.job_id]
    return job ~= nil and job.state == "running" and (job.iteration or 0) > 0
  end)
  vim.cmd("CortexCancel")
  wait_for("the wizard to end", 60000, function() return wizard.last.result ~= nil end)
  eq(wizard.last.result, "cancelled", "result")
  assert(noted("Cancelling "), vim.inspect(notes))
end)

test("progress shows reward accuracy and margin of preference training when present", function()
  local format = require("cortex.format")
  local event = { state = "running", iteration = 5, totalIterations = 10, trainLoss = 0.6931,
    rewardAccuracy = 0.75, margin = 0.12345 }
  eq(format.progress(event), "step 5/10 | Loss 0.6931 | Acc 75% | Margin 0.123", "progress")
  eq(format.status(event), "Cortex: loss 0.693 · acc 75%", "status")
  event.rewardAccuracy, event.margin = vim.NIL, nil
  eq(format.progress(event), "step 5/10 | Loss 0.6931", "progress without them")
end)

test(":CortexGpu shows the backend", function()
  notes = {}
  vim.cmd("CortexGpu")
  wait_for("systemInfo", 30000, function() return noted("^Backend: ") ~= nil end)
end)

test(":CortexExport MODEL TARGET QUANT sends cortex/exportModel and shows the next commands", function()
  local real, sent = cortex.request, {}
  cortex.request = function(method, params)
    if method ~= "cortex/exportModel" then return real(method, params) end
    table.insert(sent, params)
    return { name = "my-ft-ollama", path = "/h/exports/my-ft-ollama", sizeBytes = 2500000, target = "ollama",
      verification = { status = "passed", tool = "llama.cpp", tokenAgreement = 1.0 },
      nextCommands = { "ollama create my-ft-ollama -f /h/exports/my-ft-ollama/Modelfile", "ollama run my-ft-ollama" } }
  end
  notes = {}
  local ok, err = pcall(function()
    vim.cmd("CortexExport my-ft ollama q8_0")
    wait_for("the export", 20000, function() return noted("^Exported ") ~= nil end)
  end)
  cortex.request = real
  assert(ok, err)
  eq(sent, { { model = "my-ft", target = "ollama", quantization = "q8_0" } }, "request")
  local note = noted("^Exported ").message
  assert(note:find("verified with llama.cpp: 100%% of tokens agree"), note)
  assert(note:find("ollama create my-ft-ollama -f ", 1, true), note)
end)

out(string.format("# neovim %s: %d passed, %d failed", tostring(vim.version().major) .. "." .. tostring(vim.version().minor) .. "." ..
  tostring(vim.version().patch), passed, failed))
-- Stop the server cleanly, then leave with the right status.
for _, client in ipairs(vim.lsp.get_active_clients()) do client.stop() end
vim.wait(3000, function() return #vim.lsp.get_active_clients() == 0 end, 50)
if failed > 0 then vim.cmd("cquit 1") else vim.cmd("qall!") end
