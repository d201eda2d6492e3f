"""Bad-input corpus, part 3: the library API (sampler, scorer, rewards, tokenizer, model config files).
Each case is a clear error naming the argument (or file and key) and what was expected, raised on the
host before any jitted model code runs or a model loads (`bad_inputs_lib.check_case`)."""

from __future__ import annotations

import contextlib
import io
import json

import jax
import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers

from bad_inputs_lib import Case, check_case, ids
from sharpen_jax import demo, scoring, sampling, tokenizer as tokenizer_lib, weights
from sharpen_jax.tasks import __main__ as tasks_cli
from sharpen_jax.config import TransformerConfig
from sharpen_jax.selection import RewardInputs
from sharpen_jax.testing import random_params

CONFIG = TransformerConfig.tiny()
PARAMS = random_params(CONFIG, 0)
KEY = jax.random.key(0)


def _sample(prompts=([1, 2, 3],), **overrides):
    kwargs = dict(num_samples=2, max_new_tokens=4, temperature=1.0, rng=KEY)
    kwargs.update(overrides)
    return lambda tmp_path: sampling.sample(PARAMS, CONFIG, prompts, **kwargs)


def _sampler_cases() -> list[Case]:
    nan, inf = float("nan"), float("inf")
    cases = [
        ("temperature-nan", _sample(temperature=nan), ValueError, r"temperature=nan; expected a finite number >= 0"),
        ("temperature-inf", _sample(temperature=inf), ValueError, r"temperature=inf; expected a finite number"),
        ("temperature-negative", _sample(temperature=-0.5), ValueError, r"temperature=-0\.5; expected .*>= 0"),
        ("temperature-str", _sample(temperature="1.0"), ValueError, r"temperature='1\.0'; expected a finite number"),
        ("top-p-nan", _sample(top_p=nan), ValueError, r"top_p=nan; expected a finite number > 0 and <= 1"),
        ("top-p-zero", _sample(top_p=0.0), ValueError, r"top_p=0\.0; expected .*> 0 and <= 1"),
        ("top-p-above-one", _sample(top_p=1.5), ValueError, r"top_p=1\.5; expected .*<= 1"),
        ("num-samples-float", _sample(num_samples=2.5), ValueError, r"num_samples=2\.5; expected an integer >= 1"),
        ("num-samples-bool", _sample(num_samples=True), ValueError, r"num_samples=True; expected an integer"),
        ("num-samples-zero", _sample(num_samples=0), ValueError, r"num_samples=0; expected an integer >= 1"),
        ("max-new-tokens-zero", _sample(max_new_tokens=0), ValueError, r"max_new_tokens=0; expected an integer >= 1"),
        ("max-new-tokens-float", _sample(max_new_tokens=4.0), ValueError, r"max_new_tokens=4\.0; expected an integer"),
        ("top-k-negative", _sample(top_k=-1), ValueError, r"top_k=-1; expected an integer >= 0"),
        ("top-k-float", _sample(top_k=1.5), ValueError, r"top_k=1\.5; expected an integer >= 0"),
        ("max-rows-zero", _sample(max_rows=0), ValueError, r"max_rows=0; expected an integer >= 1"),
        ("prompts-str", _sample(prompts="1 2 3"), TypeError, r"prompts is a str; expected a sequence of prompts"),
        ("prompts-int", _sample(prompts=7), TypeError, r"prompts is a int; expected a sequence of prompts"),
        ("prompt-is-text", _sample(prompts=["What is 2+2?"]), TypeError,
         r"prompts\[0\] is a str .*expected a sequence of token ids"),
        ("prompt-float-ids", _sample(prompts=[[1.0, 2.5]]), TypeError, r"prompts\[0\] has float64 entries; expected "
                                                                        r"integer token ids"),
        ("prompt-bool-ids", _sample(prompts=[[True, False]]), TypeError, r"prompts\[0\] has bool entries"),
        ("prompt-id-too-large", _sample(prompts=[[1, 2], [3, CONFIG.vocab_size]]), ValueError,
         rf"prompts\[1\] holds token id {CONFIG.vocab_size}; expected ids in \[0, {CONFIG.vocab_size}\)"),
        ("prompt-id-negative", _sample(prompts=[[-1, 2]]), ValueError, r"prompts\[0\] holds token id -1"),
        ("prompt-nested", _sample(prompts=[[[1, 2]]]), ValueError, r"prompts\[0\] has shape \(1, 2\); expected a flat"),
        ("prompt-empty", _sample(prompts=[[1], []]), ValueError, r"prompts\[1\] is empty"),
        ("prompts-empty", _sample(prompts=[]), ValueError, r"prompts is empty; expected at least one prompt"),
        ("prompt-too-long", _sample(prompts=[list(range(1, 90)) * 1], max_new_tokens=64), ValueError,
         rf"prompts\[0\] has 89 tokens; with max_new_tokens=64 it exceeds the model context of {CONFIG.max_seq_len}"),
        ("rng-missing", _sample(rng=None), ValueError, r"rng is required when temperature > 0"),
    ]
    return [Case(f"sample:{name}", call, error, message) for name, call, error, message in cases]


def _prompt_batch(b=2, p=4, c=3):
    prompt = np.ones((b, p), np.int32)
    completion = np.ones((b, c), np.int32)
    return prompt, np.ones((b, p), bool), completion, np.ones((b, c), bool)


def _score(change, **kwargs):
    def call(tmp_path):
        args = list(_prompt_batch())
        change(args)
        return scoring.score_completions(PARAMS, CONFIG, *args, **kwargs)
    return call


def _set(index, value):
    def change(args):
        args[index] = value
    return change


def _score_sequences(tokens, valid, target, **kwargs):
    return lambda tmp_path: scoring.score_sequences(PARAMS, CONFIG, tokens, valid, target, **kwargs)


def _scorer_cases() -> list[Case]:
    v = CONFIG.vocab_size
    long_t = CONFIG.max_seq_len + 1
    ones = np.ones((1, long_t), np.int32)
    cases = [
        ("prompt-id-too-large", _score(_set(0, np.full((2, 4), v, np.int32))), ValueError,
         rf"prompt_tokens_BP holds token id {v}; expected ids in \[0, {v}\)"),
        ("completion-id-too-large", _score(_set(2, np.full((2, 3), v + 5, np.int32))), ValueError,
         rf"completion_tokens_BC holds token id {v + 5}"),
        ("completion-id-negative", _score(_set(2, np.full((2, 3), -2, np.int32))), ValueError,
         r"completion_tokens_BC holds token id -2"),
        ("prompt-float-tokens", _score(_set(0, np.ones((2, 4), np.float32))), TypeError,
         r"prompt_tokens_BP has dtype float32; expected integer token ids"),
        ("prompt-1d", _score(_set(0, np.ones((4,), np.int32))), ValueError,
         r"prompt_tokens_BP has shape \(4,\); expected 2 axes"),
        ("prompt-valid-shape", _score(_set(1, np.ones((2, 5), bool))), ValueError,
         r"prompt_valid_BP has shape \(2, 5\); expected \(2, 4\)"),
        ("completion-valid-int", _score(_set(3, np.ones((2, 3), np.int32))), TypeError,
         r"completion_valid_BC has dtype int32; expected bool"),
        ("batch-mismatch", _score(lambda a: a.__setitem__(slice(2, 4), [np.ones((3, 3), np.int32),
                                                                          np.ones((3, 3), bool)])), ValueError,
         r"completion_tokens_BC has 3 rows and prompt_tokens_BP 2"),
        ("too-long-for-context", _score(lambda a: a.__setitem__(slice(2, 4), [np.ones((2, long_t), np.int32),
                                                                                np.ones((2, long_t), bool)])),
         ValueError, rf"prompt \(4\) \+ completion \({long_t}\) tokens exceed the model context of "
                     rf"{CONFIG.max_seq_len}"),
        ("prompt-row-all-padding", _score(_set(1, np.array([[True] * 4, [False] * 4]))), ValueError,
         r"prompt_valid_BP has a row with no real token"),
        ("temperature-zero", _score(lambda a: None, temperature=0.0), ValueError,
         r"temperature=0\.0; expected a finite number > 0"),
        ("temperature-nan", _score(lambda a: None, temperature=float("nan")), ValueError, r"temperature=nan"),
        ("chunk-size-zero", _score(lambda a: None, chunk_size=0), ValueError, r"chunk_size=0; expected an integer >= 1"),
        ("sequences-too-long", _score_sequences(ones, ones.astype(bool), ones.astype(bool)), ValueError,
         rf"tokens_BT has {long_t} tokens per row; expected at most the model context of {CONFIG.max_seq_len}"),
        ("sequences-target-shape", _score_sequences(np.ones((2, 6), np.int32), np.ones((2, 6), bool),
                                                    np.ones((2, 5), bool)), ValueError,
         r"target_mask_BT has shape \(2, 5\); expected \(2, 6\)"),
        ("sequences-id-too-large", _score_sequences(np.full((1, 6), v, np.int32), np.ones((1, 6), bool),
                                                    np.ones((1, 6), bool)), ValueError,
         rf"tokens_BT holds token id {v}"),
    ]
    return [Case(f"score:{name}", call, error, message) for name, call, error, message in cases]


def _reward_inputs(**changes):
    fields = dict(prompts=["p0", "p1"], questions=["q0", "q1"], completions=[["a", "b"], ["c", "d"]],
                  token_logprobs_BNC=np.full((2, 2, 3), -0.5), lengths_BN=np.array([[3, 2], [1, 0]]),
                  answers=[["1", None], ["2", "2"]])
    fields.update(changes)
    return lambda tmp_path: RewardInputs.build(**fields)


def _reward_cases() -> list[Case]:
    cases = [
        ("negative-lengths", _reward_inputs(lengths_BN=np.array([[3, -1], [1, 0]])), ValueError,
         r"lengths_BN holds -1\.\.3; expected completion lengths in \[0, C = 3\]"),
        ("lengths-beyond-width", _reward_inputs(lengths_BN=np.array([[3, 4], [1, 0]])), ValueError,
         r"lengths_BN holds 0\.\.4; expected completion lengths in \[0, C = 3\]"),
        ("float-lengths", _reward_inputs(lengths_BN=np.array([[2.5, 1], [1, 0]])), TypeError,
         r"lengths_BN has dtype float64; expected integer token counts"),
        ("nan-logprobs", _reward_inputs(token_logprobs_BNC=np.full((2, 2, 3), np.nan)), ValueError,
         r"token_logprobs_BNC holds NaN or \+inf"),
        ("logprobs-2d", _reward_inputs(token_logprobs_BNC=np.zeros((2, 2))), ValueError,
         r"token_logprobs_BNC must be \[B, N, C\], got shape \(2, 2\)"),
        ("completions-shape", _reward_inputs(completions=[["a", "b", "c"], ["c", "d", "e"]]), ValueError,
         r"completions has shape \(2, 3\); token_logprobs_BNC implies \(2, 2\)"),
        ("questions-count", _reward_inputs(questions=["q0"]), ValueError,
         r"questions has shape \(1,\); token_logprobs_BNC implies \(2,\)"),
    ]
    return [Case(f"rewards:{name}", call, error, message) for name, call, error, message in cases]


def _word_tokenizer(chat_template: str | None = None) -> tokenizer_lib.Tokenizer:
    words = ["<pad>", "<eos>", "hello", "world"]
    backend = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer_lib.Tokenizer(backend, bos_id=None, eos_ids=[1], pad_id=0, chat_template=chat_template)


def _chat(template: str):
    return lambda tmp_path: _word_tokenizer(template).apply_chat_template([{"role": "user", "content": "hello"}])


def _hf_dir(files: dict):
    def call(tmp_path):
        folder = tmp_path / "tok"
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        return tokenizer_lib.from_hf_dir(str(folder))
    return call


def _tokenizer_json() -> str:
    return _word_tokenizer().backend.to_str()


def _tokenizer_cases() -> list[Case]:
    budget = tokenizer_lib.CHAT_RENDER_BUDGET
    cases = [
        ("encode-bytes", lambda t: _word_tokenizer().encode(b"hello"), TypeError,
         r"text is a bytes; expected str \(decode bytes to str first\)"),
        ("encode-none", lambda t: _word_tokenizer().encode(None), TypeError, r"text is a NoneType; expected str"),
        ("encode-list", lambda t: _word_tokenizer().encode(["hello"]), TypeError, r"text is a list; expected str"),
        ("decode-out-of-range", lambda t: _word_tokenizer().decode([2, 99]), ValueError,
         r"ids holds token id 99; expected ids in \[0, 4\)"),
        ("decode-negative", lambda t: _word_tokenizer().decode([-1]), ValueError, r"ids holds token id -1"),
        ("decode-float", lambda t: _word_tokenizer().decode([2.0, 3.5]), TypeError,
         r"ids has float64 entries; expected integer token ids"),
        ("decode-text", lambda t: _word_tokenizer().decode("hello"), TypeError, r"ids is a str"),
        ("chat-no-template", _chat(None), ValueError, r"this tokenizer has no chat template"),
        ("chat-string-multiply", _chat("{{ 'x' * 100000000 }}"), ValueError,
         rf"renders more than CHAT_RENDER_BUDGET = {budget:,} characters"),
        ("chat-nested-loops", _chat("{% for i in range(99999) %}{% for j in range(99999) %}ab{% endfor %}"
                                    "{% endfor %}"), ValueError, r"renders more than CHAT_RENDER_BUDGET"),
        ("chat-huge-power", _chat("{{ 10 ** 100000000 }}"), ValueError, r"x \*\* 100000000; expected exponents"),
        ("hf-no-tokenizer-json", _hf_dir({"tokenizer_config.json": "{}"}), ValueError, r"tok: no tokenizer\.json"),
        ("hf-broken-tokenizer-json", _hf_dir({"tokenizer.json": '{"model": 3'}), ValueError,
         r"tok/tokenizer\.json: not a readable tokenizer\.json"),
        ("hf-broken-tokenizer-config", _hf_dir({"tokenizer.json": _tokenizer_json(),
                                                "tokenizer_config.json": "{bos"}), ValueError,
         r"tok/tokenizer_config\.json: not a JSON file"),
        ("hf-tokenizer-config-list", _hf_dir({"tokenizer.json": _tokenizer_json(),
                                              "tokenizer_config.json": "[1, 2]"}), ValueError,
         r"tok/tokenizer_config\.json: holds a JSON list; expected an object"),
        ("hf-tokenizer-config-utf8", _hf_dir({"tokenizer.json": _tokenizer_json(),
                                              "tokenizer_config.json": b'{"eos_token": "\xff"}'}), ValueError,
         r"tok/tokenizer_config\.json: not a JSON file"),
        ("hf-chat-template-not-str", _hf_dir({"tokenizer.json": _tokenizer_json(),
                                              "tokenizer_config.json": '{"chat_template": 5}'}), ValueError,
         r"tokenizer_config\.json: chat_template is a int; expected a jinja2 string"),
    ]
    return [Case(f"tokenizer:{name}", call, error, message) for name, call, error, message in cases]


HF_CONFIG = dict(model_type="llama", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, vocab_size=97)


def _model_config(changes: dict | str):
    def call(tmp_path):
        folder = tmp_path / "model"
        folder.mkdir(exist_ok=True)
        text = changes if isinstance(changes, str) else json.dumps(
            {k: v for k, v in {**HF_CONFIG, **changes}.items() if v is not _DROP})
        (folder / "config.json").write_text(text)
        return weights.config_from_hf(str(folder / "config.json"))
    return call


_DROP = object()


def _model_config_cases() -> list[Case]:
    file = r"model/config\.json: "
    cases = [
        ("hidden-size-str", {"hidden_size": "32"}, r"hidden_size='32'; expected an integer >= 1"),
        ("heads-null", {"num_attention_heads": None}, r"num_attention_heads is null; expected an integer"),
        ("layers-zero", {"num_hidden_layers": 0}, r"num_hidden_layers=0; expected an integer >= 1"),
        ("vocab-negative", {"vocab_size": -1}, r"vocab_size=-1; expected an integer >= 1"),
        ("vocab-float", {"vocab_size": 97.5}, r"vocab_size=97\.5; expected an integer"),
        ("intermediate-bool", {"intermediate_size": True}, r"intermediate_size=True; expected an integer"),
        ("eps-str", {"rms_norm_eps": "x"}, r"rms_norm_eps='x'; expected a finite number > 0"),
        ("eps-zero", {"rms_norm_eps": 0}, r"rms_norm_eps=0; expected a finite number > 0"),
        ("tie-str", {"tie_word_embeddings": "yes"}, r"tie_word_embeddings='yes'; expected true or false"),
        ("kv-heads-not-divisor", {"num_key_value_heads": 3}, r"num_heads=4 must be a multiple of num_kv_heads=3"),
        ("rope-theta-negative", {"rope_theta": -1}, r"rope_theta=-1; expected a finite number > 0"),
        ("max-positions-zero", {"max_position_embeddings": 0}, r"max_position_embeddings=0; expected an integer"),
        ("head-dim-odd", {"head_dim": 3}, r"head_dim=3 must be even"),
        ("hidden-not-multiple", {"hidden_size": 30}, r"hidden_size=30 is not a multiple of num_attention_heads=4"),
        ("missing-vocab", {"vocab_size": _DROP}, r"missing required keys \['vocab_size'\]"),
        ("model-type", {"model_type": "gpt_neox"}, r"model_type='gpt_neox' is not supported"),
        ("rope-llama3-no-factor", {"rope_scaling": {"rope_type": "llama3", "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8192}},
         r"factor is missing; expected a number"),
        ("rope-scaling-list", {"rope_scaling": [1, 2]}, r"rope_scaling=\[1, 2\]; expected an object or null"),
        ("sliding-window-str", {"model_type": "mistral", "sliding_window": "4k"},
         r"sliding_window='4k'; expected an integer >= 1"),
        ("phi3-small", {"model_type": "phi3small"}, r"model_type='phi3small' \(Phi-3-small: blocksparse attention"),
        ("hidden-act-gelu", {"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported; expected 'silu'"),
        ("partial-rotary", {"model_type": "phi3", "partial_rotary_factor": 0.75},
         r"partial_rotary_factor=0\.75 is not supported; expected 1\.0"),
        ("longrope-factors-str", {"model_type": "phi3", "rope_scaling": {"type": "longrope", "short_factor": "1",
                                                                         "long_factor": [1.0] * 4}},
         r"rope_scaling\.short_factor='1'; expected a list of positive numbers"),
        ("longrope-factors-length", {"model_type": "phi3", "rope_scaling": {"type": "su", "short_factor": [1.0] * 3,
                                                                            "long_factor": [1.0] * 4}},
         r"rope_scaling\.short_factor has 3 entries; expected head_dim / 2 = 4"),
        ("garbage-json", "{garbage", r"not a JSON file"),
        ("json-list", "[1, 2, 3]", r"holds a JSON list; expected an object"),
    ]
    return [Case(f"model-config:{name}", _model_config(changes), weights.WeightsError, file + message)
            for name, changes, message in cases]


def _cli(main, argv: list[str]):
    """Run a module's main(argv) in process; its exit status (returned or raised) as a SystemExit
    carrying what it printed to stderr."""
    def call(tmp_path):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                status = main([a.replace("TMP", str(tmp_path)) for a in argv])
        except SystemExit as exit_:
            status = exit_.code
        exit_ = SystemExit(status)
        exit_.stderr_text = stderr.getvalue()
        raise exit_
    return call


def _cli_cases() -> list[Case]:
    cases = [
        ("demo:num-samples-zero", demo.main, ["--num-samples", "0"], r"--num-samples=0; expected an integer >= 1"),
        ("demo:max-new-tokens-negative", demo.main, ["--max-new-tokens", "-1"],
         r"--max-new-tokens=-1; expected an integer >= 1"),
        ("demo:model-missing", demo.main, ["--model", "TMP/none"], r"model path '.*/none' does not exist"),
        ("tasks:num-shots-negative", tasks_cli.main, ["arithmetic", "--num-shots", "-3"],
         r"--num-shots=-3; expected an integer >= 0"),
        ("tasks:show-negative", tasks_cli.main, ["arithmetic", "--show", "-1"], r"--show=-1; expected an integer >= 0"),
        ("tasks:data-dir-missing", tasks_cli.main, ["gsm8k", "--data-dir", "TMP/none"],
         r"data_dir '.*/none' does not exist"),
        ("tasks:bad-option-value", tasks_cli.main, ["arithmetic", "--option", "digits=abc"],
         r"digits must be an int in \[1, 30\], got 'abc'"),
    ]
    return [Case(f"cli:{name}", _cli(main, argv), SystemExit, message) for name, main, argv, message in cases]


def test_cli_errors_exit_with_status_2(tmp_path, monkeypatch):
    """The command lines above exit with status 2 (a usage error), not 1 or a traceback."""
    for case in _cli_cases():
        err = check_case(case, tmp_path, monkeypatch)
        assert err.code == 2, f"{case.id}: exit status {err.code}"
        assert "Traceback" not in err.stderr_text, case.id


CASES = _sampler_cases() + _scorer_cases() + _reward_cases() + _tokenizer_cases() + _model_config_cases() + _cli_cases()


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_library_input_is_a_clear_early_error(case, tmp_path, monkeypatch):
    check_case(case, tmp_path, monkeypatch)


def test_the_checked_entry_points_still_accept_good_input(tmp_path):
    """The negative control of the corpus: the same calls with good values run, and agree."""
    out = sampling.sample(PARAMS, CONFIG, [[1, 2, 3]], num_samples=2, max_new_tokens=4, temperature=1.0, rng=KEY)
    tokens = out.tokens[0].astype(np.int32)
    valid = np.arange(tokens.shape[1])[None, :] < out.lengths[0][:, None]
    scored = scoring.score_completions(PARAMS, CONFIG, np.full((2, 3), 1, np.int32) + np.arange(3, dtype=np.int32),
                                       np.ones((2, 3), bool), tokens, valid)
    np.testing.assert_allclose(scored.sum_logprob, (out.model_logprobs[0] * valid).sum(-1), rtol=1e-4, atol=1e-4)
    assert _word_tokenizer("{{ messages[0].content }}!").apply_chat_template(
        [{"role": "user", "content": "hi"}]) == "hi!"
    assert _word_tokenizer().decode([2, 3]) == "hello world"
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIG))
    assert weights.config_from_hf(str(tmp_path / "config.json")).num_kv_heads == 4
