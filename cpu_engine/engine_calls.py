"""What `tensorrt_llm_bls` sends to `tensorrt_llm` and reads back: the caller's side of the backend contract.

The BLS model builds its engine requests from these names, and the render-time check (stack/contract.py)
verifies them against the rendered `tensorrt_llm` config, so the two cannot drift apart.
"""

from __future__ import annotations

#: BLS input → tensorrt_llm input, forwarded as they are when the caller sends them.
FORWARDED = {"top_k": "runtime_top_k", "top_p": "runtime_top_p", "temperature": "temperature",
             "repetition_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
             "frequency_penalty": "frequency_penalty", "random_seed": "seed", "beam_width": "beam_width",
             "return_perf_metrics": "return_perf_metrics"}
#: Sent on every generation; the boolean ones always true.
ALWAYS_SENT = ("input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "stop_words_list",
               "bad_words_list", "streaming", "return_num_input_tokens", "return_num_output_tokens")
TRUE_FLAGS = ("streaming", "return_num_input_tokens", "return_num_output_tokens")
#: A request that cancels the running one with the same request id (upstream's `stop`).
STOP_SENT = ("input_ids", "request_output_len", "stop")
#: Read from every response: a generation fails without them.
REQUIRED_OUTPUTS = ("output_ids", "sequence_length")
#: Passed through to the BLS's caller when the engine writes them (each depends on a request flag).
PASSTHROUGH_OUTPUTS = ("kv_cache_alloc_new_blocks", "kv_cache_reused_blocks", "kv_cache_alloc_total_blocks",
                       "arrival_time_ns", "first_scheduled_time_ns", "first_token_time_ns", "last_token_time_ns",
                       "num_input_tokens", "num_output_tokens")


def sent_inputs() -> set[str]:
    return set(ALWAYS_SENT) | set(FORWARDED.values()) | set(STOP_SENT)
