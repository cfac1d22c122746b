"""The `Persona Lip Sync` node: ComfyUI's IMAGE + AUDIO in, IMAGE out, on the tiny MuseTalk files.

No ComfyUI here (tests/test_comfyui_*.py run the real one): the node's declared contract,
and what it does with real frames (a photo), real speech (our TTS, as ComfyUI's AUDIO dict)
and the tiny models found through the models directory or picked from ComfyUI's folders.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from comfyui_persona.errors import ModelFileMissingError
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_persona.nodes.lipsync_nodes import PersonaLipSync, weight_choices
from comfyui_persona.video.lipsync.settings import LipSyncSettings
from comfyui_persona.video.lipsync.testing import face_frame, spoken, write_tiny_lipsync_models
from comfyui_persona.video.model_files import ENV_VAR

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-lipsync")
    write_tiny_lipsync_models(directory)
    return directory


def comfy_audio(seg) -> dict:
    """ComfyUI's AUDIO: {"waveform": (batch, channels, samples) float, "sample_rate": int}, stereo here."""
    mono = torch.from_numpy(seg.pcm.astype(np.float32) / 32768.0)
    return {"waveform": torch.stack([mono, mono])[None], "sample_rate": seg.sample_rate}


def comfy_images(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).to(torch.float32) / 255.0


def test_node_is_registered_with_the_classic_api_and_tooltips():
    assert NODE_DISPLAY_NAME_MAPPINGS["PersonaLipSync"] == "Persona Lip Sync"
    cls = NODE_CLASS_MAPPINGS["PersonaLipSync"]
    assert cls.RETURN_TYPES == ("IMAGE",) and cls.CATEGORY.startswith("persona/") and cls.DESCRIPTION
    declared = cls.INPUT_TYPES()
    assert declared["required"]["images"][0] == "IMAGE" and declared["required"]["audio"][0] == "AUDIO"
    for section in ("required", "optional"):
        for name, entry in declared[section].items():
            assert len(entry) == 2 and entry[1].get("tooltip"), name
    # Defaults, bounds and help come from the settings model (one source).
    field = LipSyncSettings.model_fields["detect_every"]
    assert declared["optional"]["detect_every"][1] == {"default": 3, "min": 1, "max": 16, "tooltip": field.description}
    assert declared["optional"]["dtype"][0] == ["float16", "bfloat16", "float32"]


def test_node_resyncs_speaking_frames_and_leaves_the_rest(tiny_dir, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tiny_dir))
    frames = np.stack([face_frame("yaoming.jpg")] * 10)
    speech = spoken("Hi there.")  # about 0.6 s; frames at 16 fps, the audio starting at frame 2
    images = comfy_images(frames)
    (out,) = PersonaLipSync().sync(images, comfy_audio(speech), fps=16.0, enabled=True, audio_start_ms=125.0)
    assert out.shape == images.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    redrawn = (out != images).flatten(1).any(dim=1).tolist()
    speaking_until = 125.0 + 1000.0 * len(speech.pcm) / speech.sample_rate
    for i, changed in enumerate(redrawn):
        t = i * 62.5
        if t + 110 < 125.0 or t - 90 > speaking_until:  # its 200 ms window misses the audio
            assert not changed, i
    assert sum(redrawn) >= 5


def test_node_off_returns_its_input(tiny_dir, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tiny_dir))
    images = comfy_images(np.stack([face_frame("yaoming.jpg")] * 2))
    assert PersonaLipSync().sync(images, comfy_audio(spoken("Hi.")), 16.0, False) == (images,)


def test_missing_weights_raise_the_named_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    images = comfy_images(np.stack([face_frame("yaoming.jpg")]))
    with pytest.raises(ModelFileMissingError) as err:
        PersonaLipSync().sync(images, comfy_audio(spoken("Hi.")), 16.0, True)
    assert err.value.name == "musetalk/musetalkV15/unet.pth" and "TMElyralab/MuseTalk" in str(err.value)


def test_pickers_list_comfyui_model_files_and_load_the_picked_ones(tiny_dir, tmp_path, monkeypatch):
    """ComfyUI's `folder_paths` (its model folders), imitated by a small module in sys.modules."""
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_folder_paths = lambda kind: [str(tiny_dir)] if kind == "persona" else []
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # nothing there: the picked files must be used
    choices = weight_choices()
    assert choices[0] == "auto" and "musetalk/musetalkV15/unet.pth" in choices
    assert "musetalk/whisper/pytorch_model.bin" in choices and "musetalk/sd-vae/diffusion_pytorch_model.bin" in choices
    images = comfy_images(np.stack([face_frame("yaoming.jpg")] * 2))
    (out,) = PersonaLipSync().sync(images, comfy_audio(spoken("Hello.")), 16.0, True,
                                   unet="musetalk/musetalkV15/unet.pth", vae="musetalk/sd-vae/diffusion_pytorch_model.bin",
                                   whisper="musetalk/whisper/pytorch_model.bin")
    assert (out != images).any()


class QueueTrack:
    """A host's speech track over a real `SpeechQueue` (what the server's `SessionSpeech`
    gives the nodes: the queued sentences on the session clock)."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def render(self, backend, fps):
        return backend.next_chunk()

    def scheduled(self) -> list:
        return self.queue.scheduled()


def test_stream_node_redraws_each_chunk_to_the_speech_heard_with_it_and_stops_at_a_cut(tiny_dir, monkeypatch):
    """Between the renderer and the sink: the session's queued speech (our TTS through a real
    SpeechQueue) re-draws the chunks it reaches; a chunk out of its reach is handed on as the
    very value; a barge-in's cut stops the re-drawing where the audio stops; off passes all."""
    monkeypatch.setenv(ENV_VAR, str(tiny_dir))
    from comfyui_persona.nodes.lipsync_nodes import PersonaStreamLipSync
    from comfyui_persona.nodes.runtime import SessionStore, bind_store
    from comfyui_persona.nodes.types import FramesValue
    from comfyui_persona.video.backend import Chunk
    from comfyui_persona.video.voice.base import Utterance
    from comfyui_persona.video.voice.schedule import SpeechQueue

    assert NODE_DISPLAY_NAME_MAPPINGS["PersonaStreamLipSync"] == "Persona Stream Lip Sync"
    face = face_frame("yaoming.jpg")
    step = 62.5

    def value(first_ms: float, n: int = 8) -> FramesValue:
        pts = [round(first_ms + step * i) for i in range(n)]
        return FramesValue("talker", "longlive", Chunk(np.stack([face] * n), int(first_ms // step), pts), 16.0)

    sentence = spoken("Hello there, how are you today?")
    queue = SpeechQueue()
    queue.push(Utterance("hello", sentence.pcm, sentence.sample_rate), now_ms=0.0)  # sounds from 0 ms
    node = PersonaStreamLipSync()
    with bind_store(SessionStore()) as store:
        store.open("talker", speech=QueueTrack(queue), streamed=True)
        speaking = value(250.0)
        (out,) = node.sync(speaking, True)
        redrawn = (out.chunk.frames != speaking.chunk.frames).reshape(8, -1).any(axis=1)
        assert redrawn.all() and out.chunk.pts_ms == speaking.chunk.pts_ms and out.session_id == "talker"

        later = value(sentence.end_ms + 5_000.0)
        assert node.sync(later, True)[0] is later  # no speech reaches it: untouched, no model work

        cut_at = 500.0
        queue.cut(cut_at)  # barge-in: the audio ends at 500 ms
        across = value(250.0)
        (out,) = node.sync(across, True)
        redrawn = (out.chunk.frames != across.chunk.frames).reshape(8, -1).any(axis=1)
        hears_speech = [pts - 80 < cut_at for pts in across.chunk.pts_ms]  # a frame reads [t-80, t+120)
        assert redrawn.tolist() == hears_speech and any(hears_speech) and not all(hears_speech)

        assert node.sync(speaking, False)[0] is speaking  # off: the stream as rendered
