"""Lip-sync on frames already made: MuseTalk 1.5 re-draws the mouth to match the speech.

| module | what it does |
|---|---|
| `config` | MuseTalk 1.5's frozen architecture (UNet, SD VAE, Whisper-tiny) as named presets |
| `model` | `MuseTalk`: the three library models and the single-step inpainting forward |
| `checkpoint` | the released files: find, check (`persona models check`), strict load; converters |
| `audio` | `SpeechAudio` segments on the frames' clock, 16 kHz resampling, Whisper features per frame |
| `face` | SCRFD detection → MuseTalk crop boxes, interpolated and One-Euro smoothed |
| `blend` | crops out, feathered mouth-only blend back (nothing outside `mouth_region` changes) |
| `stage` | `LipSyncStage`: chunk in, chunk out, on its own CUDA stream; speech gating and cuts |
| `settings` | `LipSyncSettings`: what a user may set (pydantic) |
| `meter` | mouth opening (106-point landmarks) against the speech envelope: A/V offset, confidence |
| `testing` | tiny random files in the released formats; synthetic talking clips from photos |

docs/lipsync.md says how a host calls the stage and what is measured. Importing this
package loads no torch (the model modules import it when used).
"""

from .audio import SpeechAudio, speech_from_schedule
from .settings import LipSyncSettings
from .stage import LipSyncJob, LipSyncStage

__all__ = ["LipSyncJob", "LipSyncSettings", "LipSyncStage", "SpeechAudio", "speech_from_schedule"]
