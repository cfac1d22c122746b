"""The persona's voice as ComfyUI AUDIO: a reply spoken with the card's voice.

A queued ComfyUI run has no server speaking for it, so its video would be silent: this node
speaks the interpreter's reply with the persona's voice (`video.voice`, the same engines and
voice checks as the server) and outputs ComfyUI's AUDIO (`{"waveform": [batch, channels,
samples] float in -1..1, "sample_rate"}`), for Create Video / Save Video, Save Audio or any
audio node.
"""

from __future__ import annotations

from .types import PERSONA


class PersonaSpeak:
    """Speaks a text (the persona's reply) with the persona's voice."""

    DESCRIPTION = (
        "Persona voice: speaks the text (e.g. the interpreter's reply) with the persona card's voice "
        "(espeak-ng, or piper when installed) and outputs AUDIO for Create Video / Save Video or any audio node."
    )
    CATEGORY = "persona/voice"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "speak"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "persona": (PERSONA, {"tooltip": "Whose voice (the card's voice block)."}),
                "text": ("STRING", {"default": "", "multiline": True, "forceInput": True,
                                    "tooltip": "What to say: the interpreter's reply, or any text (at most 4000 characters)."}),
            }
        }

    def speak(self, persona, text: str) -> tuple:
        import numpy as np
        import torch

        from ..video.voice import STREAM_RATE, checked_voice, get_synthesizer
        from ..video.voice.packets import resample

        voice, _ = checked_voice(persona.voice.model_dump())
        text = text.strip()[:4000]
        if text:
            utterance = get_synthesizer(voice.engine).synthesize(text, voice)
            pcm = resample(utterance.pcm, utterance.sample_rate, STREAM_RATE)
        else:
            pcm = np.zeros(STREAM_RATE // 10, np.int16)  # a tenth of a second of silence: never empty
        waveform = torch.from_numpy(pcm.astype(np.float32) / 32768.0).reshape(1, 1, -1)
        return ({"waveform": waveform, "sample_rate": STREAM_RATE},)
