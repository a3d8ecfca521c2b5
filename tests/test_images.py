"""Images in prompts: a path, bytes, a PIL image or a URL, sent as each SDK sends them, their
tokens counted before the call with each provider's documented formula (so max_cost sees them),
and a clear error for what cannot be sent."""

from __future__ import annotations

import asyncio
import io
import json

import anthropic
import openai
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY
from PIL import Image as PILImage

from cognitionos_kit import CostLimitError, Image, InvalidRequestError, Kit, LatencyModel
from cognitionos_kit.calls.images import image_tokens

QUESTION = "What is in this picture?"


def _png(w: int = 64, h: int = 48, color: str = "red", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (w, h), color).save(buf, format=fmt)
    return buf.getvalue()


def _openai_reply() -> bytes:
    return json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "A red square."},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 8514, "completion_tokens": 5, "total_tokens": 8519}}).encode()


def _anthropic_reply() -> bytes:
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
                       "content": [{"type": "text", "text": "A red square."}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 18, "output_tokens": 5}}).encode()


# --- loading ------------------------------------------------------------------------------------
def test_an_image_from_a_path_bytes_a_pil_image_a_data_url_or_a_url(tmp_path):
    data = _png(64, 48)
    path = tmp_path / "red.png"
    path.write_bytes(data)
    for source in (path, str(path), data, PILImage.open(io.BytesIO(data)), "data:image/png;base64," + Image.of(data).base64):
        img = Image.of(source)
        assert (img.media_type, img.width, img.height) == ("image/png", 64, 48)
        assert img.data_url.startswith("data:image/png;base64,")
    jpeg = Image.of(PILImage.new("RGBA", (10, 20)).convert("RGB"))
    assert jpeg.media_type == "image/png" and (jpeg.width, jpeg.height) == (10, 20)  # a new PIL image is sent as PNG
    url = Image.of("https://example.com/cat.jpg", detail="low")
    assert url.url == "https://example.com/cat.jpg" and url.width is None and url.detail == "low"
    assert "64x48" in repr(Image.of(data))


@pytest.mark.parametrize("source, fragment", [
    ("missing.png", "image file not found"),
    (b"not an image at all", "not an image Pillow can read"),
    (_png(fmt="BMP"), "is a BMP image; send JPEG, PNG, GIF or WebP"),
    (b"", "holds no image"),
    (42, "must be a file path, bytes, a PIL image or an http"),
    ("data:image/png,abc", "must be base64"),
])
def test_what_cannot_be_sent_is_a_clear_error_before_sending(tmp_path, source, fragment):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    with pytest.raises(InvalidRequestError, match=fragment):
        kit.complete(QUESTION, images=[source])
    assert kit.simulated.calls == 0 and len(kit.usage()) == 0
    with pytest.raises(InvalidRequestError, match="detail must be"):
        Image.of(_png(), detail="ultra")


# --- token formulas -----------------------------------------------------------------------------
@pytest.mark.parametrize("model, size, detail, expected", [
    ("gpt-4o", (1024, 1024), "high", 765),            # the guide's examples: 4 tiles x 170 + 85
    ("gpt-4o", (2048, 4096), "auto", 1105),           # 1024x2048 -> 768x1536: 6 tiles
    ("gpt-4o", (4096, 8192), "low", 85),
    ("gpt-4o-mini", (512, 512), "high", 2833 + 5667),
    ("gpt-5", (1024, 1024), "high", 70 + 4 * 140),
    ("gpt-4.1-mini", (1024, 1024), "auto", 1659),     # 1024 patches x 1.62
    ("gpt-4.1-nano", (1800, 2400), "auto", 3572),     # scaled to 1452 patches x 2.46
    ("claude-sonnet-4-5", (1000, 1000), "auto", 1334),  # width x height / 750
    ("claude-sonnet-4-5", (4000, 3000), "auto", 1600),  # scaled down to about 1,600 tokens
    ("claude-sonnet-4-5", (200, 100), "auto", 27),
])
def test_image_tokens_follow_each_providers_formula(model, size, detail, expected):
    assert image_tokens(Image(media_type="image/png", width=size[0], height=size[1], detail=detail), model) == expected


def test_a_url_is_counted_at_the_worst_case():
    url = Image.of("https://example.com/cat.jpg")
    assert image_tokens(url, "gpt-4o") == 85 + 8 * 170
    assert image_tokens(url, "claude-haiku-5-5") == 1600
    assert image_tokens(url, "gpt-4.1-mini") == 2489  # 1536 patches x 1.62
    assert image_tokens(Image.of("https://example.com/cat.jpg", detail="low"), "gpt-4o") == 85


def test_image_tokens_are_counted_before_the_call_and_max_cost_sees_them(tmp_path):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    big = _png(2000, 2000)
    text_only = kit.count_tokens(QUESTION)["simulated"]["prompt_tokens"]
    with_image = kit.count_tokens([{"role": "user", "content": [QUESTION, big]}])["simulated"]["prompt_tokens"]
    assert with_image - text_only == 765  # the simulated provider counts as gpt-4o: 768x768 -> 4 tiles
    plain_worst = kit.plan(QUESTION, max_cost=1.0, model="sim-small").worst_case_usd(kit.prices)
    image_worst = kit.plan(QUESTION, max_cost=1.0, model="sim-small", images=[big]).worst_case_usd(kit.prices)
    assert image_worst > plain_worst
    between = (plain_worst + image_worst) / 2
    assert kit.plan(QUESTION, max_cost=between, model="sim-small").steps[0].request.model == "sim-small"
    # the image's tokens push sim-small past max_cost: the call goes down the ladder
    assert kit.plan(QUESTION, max_cost=between, model="sim-small", images=[big]).steps[0].request.model == "sim-nano"
    with pytest.raises(CostLimitError):
        kit.plan(QUESTION, max_cost=between / 3, model="sim-small", images=[big] * 6)
    r = kit.complete(QUESTION, images=[big])
    assert r.prompt_tokens == with_image and "Looking at a 2000x2000 PNG" in r.content
    assert kit.usage().prompt_tokens.tolist() == [with_image]


# --- on the wire --------------------------------------------------------------------------------
def test_openai_gets_image_parts_as_the_sdk_sends_them(live_kit, openai_server, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(_png())
    openai_server.enqueue_raw(200, "application/json", _openai_reply())
    r = live_kit.complete([{"role": "user", "content": [QUESTION, path,
                                                         {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg",
                                                                                             "detail": "low"}}]}],
                          model="gpt-4o-mini", providers=["openai"])
    assert r.content == "A red square." and r.prompt_tokens == 8514
    kit_body = openai_server.requests[-1].body
    openai_server.enqueue_raw(200, "application/json", _openai_reply())
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=1024, messages=[{"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": Image.of(path).data_url}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}}]}])
    assert kit_body == openai_server.requests[-1].body


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_anthropic_gets_image_blocks_as_the_sdk_sends_them(live_kit, anthropic_server, mode):
    data = _png()
    anthropic_server.enqueue_raw(200, "application/json", _anthropic_reply())
    call = live_kit.complete if mode == "sync" else (lambda *a, **k: asyncio.run(live_kit.acomplete(*a, **k)))
    r = call(QUESTION, images=[data, "https://example.com/a.jpg"], model="claude-haiku-5-5", providers=["anthropic"])
    assert r.content == "A red square."
    kit_body = anthropic_server.requests[-1].body
    anthropic_server.enqueue_raw(200, "application/json", _anthropic_reply())
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=anthropic_server.base_url, max_retries=0)
    client.messages.create(model="claude-haiku-5-5", max_tokens=1024, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": Image.of(data).base64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": QUESTION}]}])
    assert kit_body == anthropic_server.requests[-1].body


def test_images_stream_and_key_the_cache_by_content(tmp_path):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    s = kit.stream(QUESTION, images=[_png(300, 200)])
    text = "".join(s)
    assert "300x200 PNG" in text and s.completion.prompt_tokens == kit.complete(QUESTION, images=[_png(300, 200)]).prompt_tokens
    from cognitionos_kit.storage.cache import cache_key

    red, blue = (kit.plan(QUESTION, images=[_png(color=c)]).steps[0].request for c in ("red", "blue"))
    assert cache_key("simulated", red, 0) != cache_key("simulated", blue, 0)
    again = kit.plan(QUESTION, images=[_png(color="red")]).steps[0].request
    assert cache_key("simulated", red, 0) == cache_key("simulated", again, 0)
