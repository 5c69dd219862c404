;;; test-cortex.el --- headless eglot against the real cortex-rpc  -*- lexical-binding: t; -*-

;; Run by ../run-tests.sh: opens a JSONL file with eglot, checks that diagnostics arrive,
;; hover answers, and that eglot's own code-action request on a trailing-comma line (the
;; range before point, no diagnostics) is offered the fix, which then fixes the line.

(require 'cl-lib)
(add-to-list 'load-path (getenv "CORTEX_EMACS_ROOT"))
(require 'cortex-eglot)

(setq cortex-eglot-server-command (list (getenv "CORTEX_RPC"))
      eglot-sync-connect 60
      eglot-connect-timeout 60)

(defvar cortex-test-failures 0)

(defun cortex-test-check (name ok &optional detail)
  "Report test NAME: passed when OK; DETAIL is printed on failure."
  (message "%s - %s%s" (if ok "ok" "not ok") name
           (if (and detail (not ok)) (format " (%S)" detail) ""))
  (unless ok (cl-incf cortex-test-failures))
  ok)

(defun cortex-test-wait (predicate seconds)
  "Return PREDICATE's first non-nil value within SECONDS, else nil."
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (accept-process-output nil 0.1))
    value))

(defun cortex-test-codes ()
  "The cortex codes of the buffer's flymake diagnostics, as (CODE . LINE)."
  (mapcar (lambda (d)
            (let ((lsp (cdr (assoc 'eglot-lsp-diag (flymake-diagnostic-data d)))))
              (cons (plist-get lsp :code) (line-number-at-pos (flymake-diagnostic-beg d)))))
          (flymake-diagnostics)))

(defun cortex-test-goto (line &optional column)
  "Go to 1-based LINE, at COLUMN or at its end."
  (goto-char (point-min))
  (forward-line (1- line))
  (if column (forward-char column) (end-of-line)))

(defun cortex-test-actions ()
  "Ask for code actions at point as M-x eglot-code-actions does: (BOUNDS SENT TITLES ACTIONS).
SENT are the flymake diagnostics eglot puts in the request's context."
  (let* ((bounds (eglot--region-bounds))
         (sent (flymake-diagnostics (car bounds) (cadr bounds)))
         (actions (eglot-code-actions (car bounds) (cadr bounds))))
    (list bounds sent (mapcar (lambda (a) (plist-get a :title)) actions) actions)))

(defun cortex-test-run ()
  (find-file (expand-file-name "data.jsonl" (getenv "CORTEX_TEST_DIR")))
  (cortex-test-check "the file opens in jsonl-mode" (eq major-mode 'jsonl-mode) major-mode)
  (apply #'eglot (eglot--guess-contact))
  (let ((server (cortex-test-wait #'eglot-current-server 60)))
    (cortex-test-check "eglot connects to cortex-rpc" server)
    (cortex-test-check
     "diagnostics arrive"
     (cortex-test-wait (lambda () (member '("trailing-comma" . 2) (cortex-test-codes))) 60)
     (cortex-test-codes))
    (cortex-test-check "the rename diagnostic is on line 3"
                       (member '("missing-field" . 3) (cortex-test-codes)) (cortex-test-codes))
    (cortex-test-goto 1 3)
    (let* ((hover (jsonrpc-request server :textDocument/hover
                                   (eglot--TextDocumentPositionParams)))
           (text (plist-get (plist-get hover :contents) :value)))
      (cortex-test-check "hover describes the record"
                         (and text (string-match-p "prompt-response" text)) hover))
    (cortex-test-check "the server names its code action kinds"
                       (eglot--server-capable :codeActionProvider :codeActionKinds))
    ;; Point right before the comma: eglot 1.9 sends the object before point as the range
    ;; and no diagnostics (the comma's is outside it).
    (cortex-test-goto 2)
    (backward-char)
    (pcase-let ((`(,bounds ,sent ,titles) (cortex-test-actions)))
      (cortex-test-check "before the comma, eglot sends the range before point, no diagnostic"
                         (and (car bounds) (< (cadr bounds) (line-end-position)) (null sent))
                         (list bounds sent))
      (cortex-test-check "and is offered the trailing-comma fix"
                         (member "Remove the trailing comma" titles) titles))
    ;; Point after the comma, as a user leaves it: eglot sends point and all diagnostics.
    (cortex-test-goto 2)
    (pcase-let* ((`(,bounds ,sent ,titles ,actions) (cortex-test-actions))
                 (fix (cl-find "Remove the trailing comma" actions
                               :key (lambda (a) (plist-get a :title)) :test #'equal)))
      (message "# after the comma eglot sent the range %S with %d diagnostic(s)"
               bounds (length sent))
      (cortex-test-check "after the comma, only the trailing-comma fix is offered"
                         (equal titles '("Remove the trailing comma")) titles)
      (when fix
        (eglot--apply-workspace-edit (plist-get fix :edit))
        (cortex-test-check
         "applying it removes the comma"
         (equal (buffer-substring-no-properties (line-beginning-position) (line-end-position))
                "{\"prompt\": \"Hi\", \"response\": \"Hello\"}")
         (buffer-substring-no-properties (line-beginning-position) (line-end-position)))
        (cortex-test-check
         "the trailing-comma diagnostic goes away"
         (cortex-test-wait (lambda () (not (assoc "trailing-comma" (cortex-test-codes)))) 60)
         (cortex-test-codes))
        ;; Saving sends textDocument/didSave, which the server handles (no warning).
        (save-buffer)
        (accept-process-output nil 1)
        (let ((stderr (cl-find-if (lambda (b) (string-match-p "stderr" (buffer-name b)))
                                  (buffer-list))))
          (cortex-test-check
           "didSave is not an unknown method"
           (and stderr (with-current-buffer stderr
                         (not (string-match-p "unknown method" (buffer-string)))))
           (and stderr (with-current-buffer stderr (buffer-string)))))))
    ;; On the "answer" key of line 3.
    (cortex-test-goto 3 32)
    (let ((titles (nth 2 (cortex-test-actions))))
      (cortex-test-check "the rename is offered on the key"
                         (member "Rename \"answer\" to \"response\"" titles) titles))
    (ignore-errors (eglot-shutdown server))))

(condition-case error
    (cortex-test-run)
  (error (cortex-test-check "no error" nil error)))
(message "%d failure(s)" cortex-test-failures)
(kill-emacs (if (> cortex-test-failures 0) 1 0))
