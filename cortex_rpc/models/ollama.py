"""Ollama Modelfiles: the chat template of each family, translated to Ollama's Go templates.

Ollama does not run Jinja; a Modelfile carries a Go ``text/template`` (``.System``,
``.Messages`` with ``.Role`` and ``.Content``). Each family's template below renders a
conversation exactly as its published Jinja template does, with three deliberate
differences: no BOS (llama.cpp adds it from the GGUF), Llama 3's "Today Date" line left out
(Go templates have no clock; Ollama's own Llama 3.2 template omits it too), and a
generation prompt only after a final user message. System prompts follow the family:
Gemma has no system role (the prompt opens the first user turn, as Gemma 3's template does),
Mistral v0.3 puts it into the last user turn, Qwen 2.5 has a default one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OllamaTemplate:
    """One family's Go template and the strings that end its turns."""

    family: str
    template: str
    stops: tuple[str, ...]


_RANGE = "{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"

LLAMA3 = OllamaTemplate(
    "llama3",
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n"
    "{{ if .System }}{{ .System }}{{ end }}<|eot_id|>\n"
    + _RANGE
    + '{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>\n\n'
    "{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{{ end }}\n"
    '{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>\n\n'
    "{{ .Content }}<|eot_id|>\n"
    "{{- end }}\n{{- end }}",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)


def _chatml(family: str, default_system: str | None, think: bool) -> OllamaTemplate:
    system = "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n"
    if default_system:
        system += "{{ else }}<|im_start|>system\n" + default_system + "<|im_end|>\n"
    answer_prefix = "{{ if $last }}<think>\n\n</think>\n\n{{ end }}" if think else ""
    return OllamaTemplate(
        family,
        system
        + "{{ end }}\n"
        + _RANGE
        + '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        "{{ if $last }}<|im_start|>assistant\n{{ end }}\n"
        '{{- else if eq .Role "assistant" }}<|im_start|>assistant\n'
        + answer_prefix
        + "{{ .Content }}<|im_end|>\n{{ end }}\n{{- end }}",
        ("<|im_start|>", "<|im_end|>"),
    )


QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN25 = _chatml("qwen2.5", QWEN25_SYSTEM, think=False)
QWEN3 = _chatml("qwen3", None, think=True)
CHATML = _chatml("chatml", None, think=False)

GEMMA = OllamaTemplate(
    "gemma",
    "{{- $system := .System }}\n" + _RANGE + '{{- if eq .Role "user" }}<start_of_turn>user\n'
    '{{ if $system }}{{ $system }}\n\n{{ $system = "" }}{{ end }}{{ .Content }}<end_of_turn>\n'
    "{{ if $last }}<start_of_turn>model\n{{ end }}\n"
    '{{- else if eq .Role "assistant" }}<start_of_turn>model\n'
    "{{ .Content }}<end_of_turn>\n{{ end }}\n{{- end }}",
    ("<start_of_turn>", "<end_of_turn>"),
)

MISTRAL = OllamaTemplate(
    "mistral",
    _RANGE
    + '{{- if eq .Role "user" }}[INST] {{ if and $last $.System }}{{ $.System }}\n\n{{ end }}'
    "{{ .Content }}[/INST]\n"
    '{{- else if eq .Role "assistant" }} {{ .Content }}</s>\n{{- end }}\n{{- end }}',
    ("[INST]", "[/INST]", "</s>"),
)

PHI3 = OllamaTemplate(
    "phi3",
    "{{- if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}\n"
    + _RANGE
    + '{{- if eq .Role "user" }}<|user|>\n{{ .Content }}<|end|>\n'
    "{{ if $last }}<|assistant|>\n{{ end }}\n"
    '{{- else if eq .Role "assistant" }}<|assistant|>\n{{ .Content }}<|end|>\n'
    "{{ if $last }}<|endoftext|>{{ end }}\n{{- end }}\n{{- end }}",
    ("<|end|>", "<|user|>", "<|assistant|>", "<|endoftext|>"),
)


def ollama_template(chat_template: str | None) -> OllamaTemplate | None:
    """Return the Go template for the family whose Jinja chat template this is (None: unknown)."""
    text = chat_template or ""
    if "<|start_header_id|>" in text:
        return LLAMA3
    if "<|im_start|>" in text:
        if "<think>" in text:
            return QWEN3
        return QWEN25 if QWEN25_SYSTEM in text else CHATML
    if "<start_of_turn>" in text:
        return GEMMA
    if "[INST]" in text:
        return MISTRAL
    if "<|user|>" in text and "<|end|>" in text:
        return PHI3
    return None


def modelfile_text(
    gguf_name: str, template: OllamaTemplate, extra_stops: tuple[str, ...] = ()
) -> str:
    """Return a Modelfile: the GGUF, its TEMPLATE and one ``PARAMETER stop`` per stop string."""
    stops = list(dict.fromkeys((*template.stops, *extra_stops)))
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template.template}"""', ""]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines.append("")
    return "\n".join(lines)
