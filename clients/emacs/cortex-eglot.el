;;; cortex-eglot.el --- cortex-rpc dataset checks in Emacs through eglot  -*- lexical-binding: t; -*-

;; Works with the eglot Debian ships (elpa-eglot 1.9, Emacs 28) and later ones.

;;; Commentary:

;; Live diagnostics, hover and quick fixes for fine-tuning datasets: load this file and
;; open a .jsonl file; eglot starts cortex-rpc for it (M-x eglot, or `eglot-ensure' in
;; `jsonl-mode-hook').  Settings go in `cortex-eglot-initialization-options' (at start) or
;; in `eglot-workspace-configuration' under :cortex (applied without a restart):
;;
;;   (setq-default eglot-workspace-configuration
;;                 '(:cortex (:model "~/models/Qwen2.5-0.5B-Instruct-4bit"
;;                            :modelDirs ["~/models"])))
;;
;; See docs/clients-editors.md for every setting.

;;; Code:

(require 'eglot)

(defgroup cortex-eglot nil
  "cortex-rpc dataset checks through eglot."
  :group 'eglot)

(defcustom cortex-eglot-server-command '("cortex-rpc")
  "The cortex-rpc command (a program on PATH, or an absolute path, then its arguments)."
  :type '(repeat string))

(defcustom cortex-eglot-initialization-options nil
  "The `initializationOptions' plist sent at start, e.g. (:modelDirs [\"~/models\"]).
Keys as in docs/clients-editors.md; nil sends none."
  :type 'plist)

(unless (fboundp 'jsonl-mode)
  (define-derived-mode jsonl-mode js-mode "JSONL"
    "Major mode for JSON Lines files (one JSON value per line)."))

(add-to-list 'auto-mode-alist '("\\.jsonl\\'" . jsonl-mode))

(defun cortex-eglot-contact (&optional _interactive)
  "Return the eglot contact that starts cortex-rpc."
  (append cortex-eglot-server-command
          (when cortex-eglot-initialization-options
            (list :initializationOptions cortex-eglot-initialization-options))))

;; The languageId is "jsonl" (the mode's name), which cortex-rpc always checks.
(add-to-list 'eglot-server-programs '(jsonl-mode . cortex-eglot-contact))

(provide 'cortex-eglot)
;;; cortex-eglot.el ends here
