-- cortex.nvim: live dataset diagnostics and the fine-tuning wizard, over the cortex-rpc server.
--
--   require("cortex").setup{ cmd = { "cortex-rpc" }, model_dirs = { "~/models" }, cortex_home = nil,
--     model = "~/models/Llama-3.2-1B-Instruct" }
--
-- Works on Neovim 0.7 (vim.lsp.start_client + vim.lsp.buf_attach_client) and 0.8+ (vim.lsp.start).
local format = require("cortex.format")

local M = {}

M.config = {
  cmd = { "cortex-rpc" },
  model_dirs = {},
  cortex_home = nil,
  -- The model the datasets will train (a path or a model name): token counts and "what gets
  -- trained" in the live diagnostics and hover, and :CortexPreviewTraining's model.
  model = nil,
  -- Buffers the server checks live (autocmd patterns).
  patterns = { "*.jsonl", "*data*.json", "*data*.csv", "*data*.txt", "*train*.json", "*train*.csv",
    "*train*.txt", "*valid*.json", "*valid*.csv", "*valid*.txt" },
  -- Show training progress with vim.notify at most this often (ms); the end is always shown.
  progress_interval_ms = 1000,
}

M.client_id = nil
M.jobs = {} -- jobId -> last cortex/trainingProgress payload
M.status = "" -- for statuslines: require("cortex").statusline()
local job_waiters = {} -- jobId -> { callbacks }
local init_waiters = {}
local ready = false
local last_notify = 0
local TERMINAL = { completed = true, failed = true, cancelled = true, interrupted = true }

function M.notify(message, level)
  vim.notify(message, level or vim.log.levels.INFO, { title = "Cortex" })
end

function M.statusline()
  return M.status
end

local function on_training_progress(_, payload)
  if type(payload) ~= "table" or not payload.jobId then return end
  M.jobs[payload.jobId] = payload
  M.status = format.status(payload)
  local now = vim.loop.now()
  if payload.event ~= "checkpoint" and (TERMINAL[payload.state] or now - last_notify >= M.config.progress_interval_ms) then
    last_notify = now
    local level = (payload.state == "failed") and vim.log.levels.ERROR or vim.log.levels.INFO
    M.notify(string.format("%s: %s", payload.outputName or payload.jobId, format.progress(payload)), level)
  end
  if TERMINAL[payload.state] then
    for _, callback in ipairs(job_waiters[payload.jobId] or {}) do callback(payload) end
    job_waiters[payload.jobId] = nil
  end
  pcall(vim.cmd, "redrawstatus")
end

local function on_work_done_progress(err, result, ctx, config)
  -- Keep Neovim's own bookkeeping ($/progress feeds client.messages and LspProgressUpdate).
  local default = vim.lsp.handlers["$/progress"]
  if default then pcall(default, err, result, ctx, config) end
  local value = result and result.value
  if type(value) == "table" and value.kind == "end" then
    M.status = "Cortex: " .. (value.message or "done")
  elseif type(value) == "table" and value.message then
    M.status = "Cortex: " .. value.message
  end
end

--- `workspace/didChangeConfiguration` settings: `{cortex = {model}}` (nil without a model, so
--- that Neovim sends none rather than an empty list).
local function settings()
  if not M.config.model then return nil end
  return { cortex = { model = M.config.model } }
end

local function client_config()
  local init_options = { modelDirs = M.config.model_dirs }
  if M.config.cortex_home then init_options.cortexHome = M.config.cortex_home end
  if M.config.model then init_options.model = M.config.model end
  return {
    name = "cortex",
    cmd = M.config.cmd,
    root_dir = vim.loop.cwd(),
    init_options = init_options,
    settings = settings(),
    handlers = {
      ["cortex/trainingProgress"] = on_training_progress,
      ["cortex/generateChunk"] = function() end,
      ["cortex/datasetSummary"] = function(_, summary)
        if type(summary) == "table" then M.summaries[summary.uri] = summary end
      end,
      ["$/progress"] = on_work_done_progress,
    },
    on_init = function()
      ready = true
      for _, callback in ipairs(init_waiters) do callback() end
      init_waiters = {}
    end,
    on_exit = function()
      M.client_id, ready = nil, false
    end,
  }
end

M.summaries = {} -- uri -> last cortex/datasetSummary
M.client_config = client_config

local function expand_model(model)
  if type(model) == "string" and model:match("^[~$]") then return vim.fn.expand(model) end
  if model == "" then return nil end
  return model
end

--- Change the model (nil: none) and tell a running server, without restarting it.
function M.set_model(model)
  M.config.model = expand_model(model)
  local client = M.client_id and vim.lsp.get_client_by_id(M.client_id)
  if client and not client.is_stopped() then
    client.config.settings = settings() or {}
    client.notify("workspace/didChangeConfiguration", { settings = { cortex = { model = M.config.model or vim.NIL } } })
  end
  return M.config.model
end

local function start_detached()
  if vim.lsp.start_client then return vim.lsp.start_client(client_config()) end
  return vim.lsp.start(client_config(), { attach = false })
end

--- The running client, started if needed (without attaching a buffer).
function M.client()
  local client = M.client_id and vim.lsp.get_client_by_id(M.client_id)
  if client and not client.is_stopped() then return client end
  ready = false
  M.client_id = start_detached()
  return vim.lsp.get_client_by_id(M.client_id)
end

--- Check `bufnr` live: attach it to the server (vim.lsp.start on 0.8+, start_client + buf_attach_client on 0.7).
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if vim.lsp.start then
    M.client_id = vim.lsp.start(client_config(), {
      bufnr = bufnr,
      reuse_client = function(client) return client.name == "cortex" and not client.is_stopped() end,
    })
  else
    M.client()
    vim.lsp.buf_attach_client(bufnr, M.client_id)
  end
  return M.client_id
end

-- Coroutine helpers: the wizard and commands run as coroutines that wait on callbacks.

--- Run `fn` in a coroutine; report errors with vim.notify instead of losing them.
function M.run(fn)
  local co = coroutine.create(function()
    local ok, err = xpcall(fn, debug.traceback)
    if not ok and not tostring(err):find("cortex: aborted", 1, true) then
      M.notify(tostring(err), vim.log.levels.ERROR)
      M.last_error = err
    end
  end)
  local ok, err = coroutine.resume(co)
  if not ok then M.notify(tostring(err), vim.log.levels.ERROR) end
  return co
end

--- Resume `co` on the main loop (never from inside itself).
function M.resumer(co)
  return function(...)
    local args = { n = select("#", ...), ... }
    vim.schedule(function()
      local ok, err = coroutine.resume(co, unpack(args, 1, args.n))
      if not ok then M.notify(tostring(err), vim.log.levels.ERROR) end
    end)
  end
end

--- Wait (in a coroutine) until the server answered initialize.
function M.await_ready()
  local client = M.client()
  if ready or (client and client.initialized) then return client end
  local co = coroutine.running()
  table.insert(init_waiters, M.resumer(co))
  coroutine.yield()
  return M.client()
end

--- Send a request from a coroutine; return result, or nil and the error ({code, message, data}).
function M.request(method, params)
  local client = M.await_ready()
  local co = coroutine.running()
  local resume = M.resumer(co)
  client.request(method, params or vim.empty_dict(), function(err, result) resume(result, err) end)
  return coroutine.yield()
end

--- Like M.request, but raise the server's error message.
function M.call(method, params)
  local result, err = M.request(method, params)
  if err then error(err.message or vim.inspect(err), 0) end
  return result
end

--- Wait (in a coroutine) for a job's terminal trainingProgress event.
function M.await_job(job_id)
  local last = M.jobs[job_id]
  if last and TERMINAL[last.state] then return last end
  local co = coroutine.running()
  job_waiters[job_id] = job_waiters[job_id] or {}
  table.insert(job_waiters[job_id], M.resumer(co))
  return coroutine.yield()
end

--- vim.ui.select from a coroutine: returns item, index (nil when dismissed).
function M.select(items, opts)
  local co = coroutine.running()
  local resume = M.resumer(co)
  vim.ui.select(items, opts, function(item, index) resume(item, index) end)
  return coroutine.yield()
end

--- vim.ui.input from a coroutine: returns the text (nil when dismissed).
function M.input(opts)
  local co = coroutine.running()
  local resume = M.resumer(co)
  vim.ui.input(opts, function(text) resume(text) end)
  return coroutine.yield()
end

-- Commands ---------------------------------------------------------------------------------------

local FORMATS = { jsonl = true, json = true, csv = true, txt = true }

--- Validate the current buffer (its text, saved or not) or `path`; fill the quickfix list.
function M.validate(path)
  local name, params
  if path and path ~= "" then
    path = vim.fn.fnamemodify(vim.fn.expand(path), ":p")
    name, params = vim.fn.fnamemodify(path, ":t"), { path = path }
  else
    local bufnr = vim.api.nvim_get_current_buf()
    local file = vim.api.nvim_buf_get_name(bufnr)
    local ext = vim.fn.fnamemodify(file, ":e"):lower()
    name = file ~= "" and vim.fn.fnamemodify(file, ":t") or "[buffer]"
    params = { text = table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), "\n"), format = FORMATS[ext] and ext or "jsonl" }
  end
  local report = M.call("cortex/validateDataset", params)
  local items, errors = {}, 0
  local bufnr = (not params.path) and vim.api.nvim_get_current_buf() or nil
  for _, d in ipairs(report.diagnostics) do
    if (d.severity or 1) == 1 then errors = errors + 1 end
    table.insert(items, {
      bufnr = bufnr, filename = params.path, lnum = d.range.start.line + 1, col = d.range.start.character + 1,
      type = (d.severity or 1) == 1 and "E" or "W", text = string.format("[%s] %s", d.code or "?", d.message),
    })
  end
  vim.fn.setqflist({}, " ", { title = "Cortex: " .. name, items = items })
  if report.ok and errors == 0 then
    M.notify(string.format("✓ Dataset validated: %d examples%s", report.examples,
      #items > 0 and string.format(" (%d warnings, see :copen)", #items) or ""))
  else
    local lines = { string.format("✗ Dataset has %d error(s):", errors) }
    for i, d in ipairs(report.diagnostics) do
      if i > 10 then table.insert(lines, "  ... :copen for all") break end
      table.insert(lines, "  " .. format.diagnostic(name, d))
    end
    M.notify(table.concat(lines, "\n"), vim.log.levels.ERROR)
  end
  M.last_validation = report
  return report
end

--- The data-quality report of the current buffer's file or `path`, as Markdown in a scratch split.
function M.report(path)
  local file = (path and path ~= "") and vim.fn.expand(path) or vim.api.nvim_buf_get_name(0)
  if file == "" then
    M.notify("Cortex: open a dataset file or give :CortexReport a path", vim.log.levels.WARN)
    return
  end
  file = vim.fn.fnamemodify(file, ":p")
  local buf = vim.fn.bufnr(file)
  if buf ~= -1 and vim.bo[buf].modified then
    M.notify("Cortex: the report reads the file on disk; unsaved changes are not included", vim.log.levels.WARN)
  end
  local report = M.call("cortex/datasetReport", { path = file, format = "markdown" })
  vim.cmd("botright new")
  local out = vim.api.nvim_get_current_buf()
  vim.bo[out].buftype, vim.bo[out].bufhidden, vim.bo[out].swapfile = "nofile", "wipe", false
  vim.api.nvim_buf_set_lines(out, 0, -1, false, vim.split(report.markdown, "\n", { plain = true }))
  vim.bo[out].modifiable, vim.bo[out].filetype = false, "markdown"
  pcall(vim.api.nvim_buf_set_name, out, "cortex-report://" .. vim.fn.fnamemodify(file, ":t"))
  M.notify(string.format("Dataset report: %s, score %d/100", vim.fn.fnamemodify(file, ":t"), report.score))
  M.last_report = report
  return report
end

function M.models()
  local models = M.call("cortex/listModels").models
  if #models == 0 then
    M.notify("No models found; add folders with setup{ model_dirs = {...} }", vim.log.levels.WARN)
    return
  end
  local model = M.select(models, { prompt = "Cortex models", kind = "cortex.models", format_item = format.model })
  if not model then return end
  local info = M.call("cortex/inspectModel", { path = model.path })
  M.notify(string.format("%s: %s, %s params (%s), %s, %s", info.name, info.architecture or "?", format.params(info.parameters),
    format.capitalize(info.category), format.bytes(info.sizeBytes), info.path))
  return info
end

function M.cancel(job_id)
  if not job_id or job_id == "" then
    local running = {}
    for _, job in ipairs(M.call("cortex/listJobs").jobs) do
      if job.state == "running" or job.state == "queued" then table.insert(running, job) end
    end
    if #running == 0 then
      M.notify("No training job is running.")
      return
    end
    local job = running[1]
    if #running > 1 then
      job = M.select(running, { prompt = "Cancel which job?", kind = "cortex.cancel",
        format_item = function(j) return string.format("%s  %s  step %s/%s", j.outputName, j.state, j.iteration or 0, j.totalIterations or "?") end })
      if not job then return end
    end
    job_id = job.jobId
  end
  M.call("cortex/cancelTraining", { jobId = job_id })
  M.notify("Cancelling " .. job_id .. " (the last checkpoint is kept; resume with cortex-finetune resume " .. job_id .. ")")
  return job_id
end

function M.gpu()
  local info = M.call("cortex/systemInfo")
  M.notify(string.format("Backend: %s (%s)\nMemory: %s available of %s\nBLAS: %s\nCortex home: %s", info.backend,
    info.device, format.bytes(info.memory.availableBytes), format.bytes(info.memory.totalBytes),
    (info.blas ~= vim.NIL and info.blas) and info.blas.name or "none (slow reference BLAS)", info.cortexHome))
  return info
end

--- The model to preview with: setup's `model`, else one picked from the server's list (or typed).
local function preview_model()
  if M.config.model then return M.config.model end
  if M.preview_model then return M.preview_model end
  local bases = {}
  for _, m in ipairs(M.call("cortex/listModels").models) do
    if m.kind ~= "fine-tuned" and not m.fineTuned and (m.error == nil or m.error == vim.NIL) then table.insert(bases, m) end
  end
  table.insert(bases, { name = "Enter a path…", path = false })
  local picked = M.select(bases, { prompt = "Model for the training preview (set setup{ model = ... } to skip)", kind = "cortex.previewModel",
    format_item = function(m) return m.path and format.model(m) or m.name end })
  if not picked then return nil end
  local model = picked.path or M.input({ prompt = "Path to the model: ", completion = "dir", cortex_step = "previewModelPath" })
  model = expand_model(model)
  M.preview_model = model
  return model
end

local preview_ns = vim.api.nvim_create_namespace("cortex_training_preview")
M.preview_ns = preview_ns

local function define_highlights()
  vim.cmd("highlight default link CortexTrained DiffAdd")
  vim.cmd("highlight default link CortexPreviewHeader Title")
end

--- The record at the cursor rendered as the trainer sees it, in a scratch split: the header line
--- (`N tokens, M trained, cut: yes/no`), the text with the trained parts highlighted
--- (CortexTrained, linked to DiffAdd), and the record's issues.
function M.preview_training()
  local bufnr = vim.api.nvim_get_current_buf()
  local file = vim.api.nvim_buf_get_name(bufnr)
  local line = vim.api.nvim_win_get_cursor(0)[1] - 1
  local model = preview_model()
  if not model then return end
  local client = M.client()
  local params = { model = model, line = line, limit = 1 }
  -- A buffer the server checks live is previewed as edited; any other file as saved.
  if client and vim.lsp.buf_is_attached(bufnr, client.id) then
    params.uri = vim.uri_from_bufnr(bufnr)
  elseif file ~= "" and vim.fn.filereadable(file) == 1 then
    params.dataset = vim.fn.fnamemodify(file, ":p")
    if vim.bo[bufnr].modified then M.notify("Cortex: the preview reads the saved file", vim.log.levels.WARN) end
  else
    M.notify("Cortex: open a dataset file and put the cursor on a record", vim.log.levels.WARN)
    return
  end
  local result = M.call("cortex/trainingPreview", params)
  local record = format.record_at(result.records or {}, line)
  local source = file ~= "" and vim.fn.fnamemodify(file, ":t") or "[buffer]"
  if not record then
    M.notify(string.format("Cortex: no record at line %d of %s", line + 1, source), vim.log.levels.WARN)
    M.last_preview = { params = params, result = result }
    return
  end
  local rendered = format.training_preview(record, { source = source, model = vim.fn.fnamemodify(model, ":t"), options = result.options })
  define_highlights()
  vim.cmd("botright new")
  local out = vim.api.nvim_get_current_buf()
  vim.bo[out].buftype, vim.bo[out].bufhidden, vim.bo[out].swapfile = "nofile", "wipe", false
  vim.api.nvim_buf_set_lines(out, 0, -1, false, rendered.lines)
  vim.api.nvim_buf_set_extmark(out, preview_ns, 0, 0, { end_row = 0, end_col = #rendered.lines[1], hl_group = "CortexPreviewHeader" })
  for _, mark in ipairs(rendered.trained) do
    vim.api.nvim_buf_set_extmark(out, preview_ns, mark[1], mark[2], { end_row = mark[3], end_col = mark[4], hl_group = "CortexTrained" })
  end
  vim.bo[out].modifiable = false
  pcall(vim.api.nvim_buf_set_name, out, string.format("cortex-training://%s:%d", source, record.line + 1))
  M.notify(string.format("%s line %d: %s", source, record.line + 1, rendered.header))
  M.last_preview = { params = params, result = result, record = record, buf = out, rendered = rendered }
  return M.last_preview
end

local EXPORT_TARGETS = { "ollama", "gguf", "lmstudio", "hf", "mlx" }

--- Export a fine-tuned model (`:CortexExport [MODEL [TARGET [QUANTIZATION]]]`, asks for what is missing).
function M.export(args)
  local words = vim.split(args or "", "%s+", { trimempty = true })
  local model, target, quantization = words[1], words[2], words[3]
  if not model then
    local tuned = vim.tbl_filter(function(m) return m.kind == "fine-tuned" end, M.call("cortex/listModels").models)
    if #tuned == 0 then
      M.notify("No fine-tuned models yet: run :CortexFinetune first.", vim.log.levels.WARN)
      return
    end
    local picked = M.select(tuned, { prompt = "Export which model?", kind = "cortex.export", format_item = format.model })
    if not picked then return end
    model = picked.name
  end
  if not target then
    target = M.select(EXPORT_TARGETS, { prompt = "Export " .. model .. " for" })
    if not target then return end
  end
  if not quantization and (target == "gguf" or target == "ollama") then
    quantization = M.select({ "f16", "q8_0", "q4_k_m" }, { prompt = "GGUF quantization" })
    if not quantization then return end
  end
  M.notify(string.format("Exporting %s for %s (fuse, convert, verify)…", model, target))
  local result = M.call("cortex/exportModel", { model = model, target = target, quantization = quantization })
  local v = result.verification
  local verified = "not verified"
  if v ~= nil and v ~= vim.NIL then
    verified = v.status == "passed"
        and string.format("verified with %s: %d%% of tokens agree", v.tool, math.floor(v.tokenAgreement * 100 + 0.5))
      or ("not verified: " .. tostring(v.reason or v.status))
  end
  M.notify(string.format("Exported %s → %s (%s, %s)\n%s", result.name, result.path, format.bytes(result.sizeBytes), verified,
    table.concat(result.nextCommands, "\n")))
  return result
end

function M.finetune(opts)
  return require("cortex.wizard").run(opts or {})
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", M.config, opts or {})
  M.config.model_dirs = vim.tbl_map(function(d) return vim.fn.expand(d) end, M.config.model_dirs or {})
  if M.config.cortex_home then M.config.cortex_home = vim.fn.expand(M.config.cortex_home) end
  M.config.model = expand_model(M.config.model)
  if vim.filetype and vim.filetype.add then pcall(vim.filetype.add, { extension = { jsonl = "jsonl" } }) end
  local group = vim.api.nvim_create_augroup("cortex", { clear = true })
  vim.api.nvim_create_autocmd("ColorScheme", { group = group, callback = define_highlights })
  define_highlights()
  vim.api.nvim_create_autocmd({ "BufReadPost", "BufNewFile" }, {
    group = group, pattern = M.config.patterns,
    callback = function(args) M.attach(args.buf) end,
  })
  local command = function(name, fn, nargs, desc)
    vim.api.nvim_create_user_command(name, function(args) M.run(function() fn(args.args) end) end,
      { nargs = nargs, desc = desc, complete = nargs == "?" and "file" or nil })
  end
  command("CortexFinetune", function() M.finetune() end, 0, "Fine-tune a model (guided wizard)")
  command("CortexValidate", M.validate, "?", "Validate the current buffer or a dataset file")
  command("CortexReport", M.report, "?", "Data-quality report of the current dataset or a file")
  command("CortexModels", M.models, 0, "List the models cortex-rpc can see")
  command("CortexCancel", M.cancel, "?", "Cancel a running training job")
  command("CortexGpu", M.gpu, 0, "Backend, memory and BLAS (cortex/systemInfo)")
  command("CortexExport", M.export, "*", "Export a fine-tuned model: MODEL TARGET (ollama, gguf, lmstudio, hf, mlx) [QUANTIZATION]")
  command("CortexPreviewTraining", M.preview_training, 0, "The record at the cursor as the trainer sees it (trained text highlighted)")
  -- Attach buffers that were already open.
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    local name = vim.api.nvim_buf_get_name(bufnr)
    if vim.api.nvim_buf_is_loaded(bufnr) and name:match("%.jsonl$") then M.attach(bufnr) end
  end
end

return M
