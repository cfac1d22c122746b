"""ComfyUI node classes: thin adapters over `persona` and `video`.

Node modules import nothing heavy at module load (torch is imported inside the node
functions), so ComfyUI's loader and the headless runner stay quick to start.
Registration is one list: add a class to `_NODES` (with its display name) to publish it.
"""

from __future__ import annotations

from .conversation_nodes import (
    PersonaCardLoader,
    PersonaConversationTurn,
    PersonaDirective,
    PersonaInterpreter,
)
from .engine_nodes import (
    PersonaLongLiveLoader,
    PersonaLongLiveSampler,
    PersonaPromptComposer,
    PersonaTransitionBlender,
)
from .identity_nodes import PersonaIdentityConditioner
from .lipsync_nodes import PersonaLipSync, PersonaStreamLipSync
from .recorder_nodes import PersonaSessionRecorder
from .scene_nodes import PersonaScene
from .stream_nodes import (
    PersonaFrameOutput,
    PersonaFramesFromImage,
    PersonaPreviewRenderer,
    PersonaStateTracker,
    PersonaStreamSink,
)
from .voice_nodes import PersonaSpeak

#: (class, display name). The mapping key is the class name, as ComfyUI workflows store it.
_NODES: list[tuple[type, str]] = [
    (PersonaCardLoader, "Persona Card Loader"),
    (PersonaScene, "Persona Scene (2-4 personas)"),
    (PersonaConversationTurn, "Persona Conversation Turn"),
    (PersonaInterpreter, "Persona Action Interpreter"),
    (PersonaDirective, "Persona Directive (manual)"),
    (PersonaStateTracker, "Persona State Tracker"),
    (PersonaPreviewRenderer, "Persona Preview Renderer (CPU)"),
    (PersonaStreamSink, "Persona Stream Sink"),
    (PersonaFrameOutput, "Persona Frames to IMAGE"),
    (PersonaFramesFromImage, "Persona Frames from IMAGE"),
    (PersonaSpeak, "Persona Speak (voice to AUDIO)"),
    (PersonaLongLiveLoader, "Persona LongLive Model Loader"),
    (PersonaLongLiveSampler, "Persona LongLive Sampler (dense / sparse attention)"),
    (PersonaPromptComposer, "Persona Prompt Composer"),
    (PersonaTransitionBlender, "Persona Transition Blender"),
    (PersonaIdentityConditioner, "Persona Identity Conditioner"),
    (PersonaSessionRecorder, "Persona Session Recorder"),
    (PersonaLipSync, "Persona Lip Sync"),
    (PersonaStreamLipSync, "Persona Stream Lip Sync"),
]

NODE_CLASS_MAPPINGS: dict[str, type] = {cls.__name__: cls for cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {cls.__name__: name for cls, name in _NODES}
