"""Every default of the project, written once: the CLI's options, the constructors and the loop read them here.

Nothing is imported (tests/test_defaults.py checks it), so ``--help`` and any module may read
this file without paying for anything. A value that depends on other options (the caption model
of a backend, --max-gap, --jobs) is computed where it is used, from these.
"""
from __future__ import annotations

# -- models ---------------------------------------------------------------------------------------
LLM_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"  # the summary model (a hub id; or a served name)
LOCAL_VLM_MODEL = "Qwen/Qwen3-VL-2B-Instruct"  # the caption model in this process
API_VLM_MODEL = "qwen3"  # the caption model's served name (vllm serve ... --served-model-name qwen3)
VLM_URL = "http://localhost:8000/v1"  # --vlm-backend api without --vlm-base-url
API_KEY_PLACEHOLDER = "EMPTY"  # local servers need no key, but the openai client needs some value
DEVICE = "auto"  # CUDA, then MPS, then CPU
DTYPE = "auto"  # the in-process models' dtype: models.hf.resolve_dtype decides for the device
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")  # --vlm-dtype / --llm-dtype choices (int8: CPU only)
VLM_BACKEND = "auto"  # api when --vlm-base-url is given, else local
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # a new index's; an index keeps its own

# -- caption calls (the CLI's values: an in-process model gets the same as a server) ----------------
VLM_TIMEOUT_S = 60.0
VLM_MAX_TOKENS = 256
VLM_TEMPERATURE = 0.2
VLM_IMAGE_MAX_SIDE = 768
# The caption model in this process on a CPU (measured in docs/performance.md): fewer visual tokens,
# a budget that fits the prompt's one or two short sentences.
VLM_CPU_IMAGE_MAX_SIDE = 320
VLM_CPU_MAX_TOKENS = 48
VLM_JPEG_QUALITY = 85
VLM_MAX_RETRIES = 3
# Clips (clips.py): frames a caption covers, and the pixels of a whole request (each frame gets 1/N).
CLIP_FRAMES_SERVER = 6  # a server: 6 frames of ~627x353 within the budget below
CLIP_FRAMES_LOCAL = 4  # in process (CPU): 4 frames at a quarter of one still cost about one still
CLIP_MAX_PIXELS_SERVER = 4 * 768 * 432  # ~1300 Qwen3-VL visual tokens: four 768x432 stills
CLIP_MAX_PIXELS_LOCAL = 768 * 432  # one 768x432 still (~324 Qwen3-VL visual tokens)
CLIP_AS = "images"  # or "video": one video part (vLLM with Qwen3-VL)
CLIP_CANDIDATES = 32  # frames kept between two captions to choose from (memory bound)

# -- summary calls --------------------------------------------------------------------------------
LLM_MAX_NEW_TOKENS = 200
LLM_TIMEOUT_S = 300.0
LLM_MAX_RETRIES = 2
SUMMARY_TOKEN_BUDGET = 1536  # tokens of captions and summary so far in one prompt

# -- sources and frame selection ------------------------------------------------------------------
INTERVAL_S = 5.0
MIN_CHANGE = 0.12  # measured in selection.py's docstring
MAX_GAP_FLOOR_S = 1.0  # --max-gap is max(this, MAX_GAP_INTERVALS x --interval)
MAX_GAP_INTERVALS = 2
MOTION_MIN_AREA = 0.002  # --motion-min-area: measured in motion.py's docstring
MOTION_STILL_S = 1.0  # motion ends after this long without a moving region
SUMMARY_INTERVAL_S = 60.0
RECONNECT_ATTEMPTS = 5
MAX_PIXELS = 7680 * 4320  # 8K: a frame, a known-faces or a dataset image larger is refused before decoding
STDIN_MAX_MB = 2048.0  # what stdin may keep on disk (an MP4 or an image is spooled)

# -- faces ----------------------------------------------------------------------------------------
FACE_MODEL = "hog"
FACE_TOLERANCE = 0.5
FACE_SCALE = 0.5  # detection runs on the frame scaled by this; encoding on the full frame

# -- scale and shutdown ---------------------------------------------------------------------------
INFLIGHT_SERVER = 2  # caption calls in flight for a server
INFLIGHT_LOCAL = 1  # the in-process model captions one frame at a time
JOBS_PER_CPU = 2  # --jobs at most this many files per CPU
SHUTDOWN_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 5.0

# -- outputs and tracing --------------------------------------------------------------------------
TRACE_LOG = "traces.jsonl"  # without Langfuse keys
LIVE_LOG_MAX_MB = 100.0  # --trace-log / --events rotate at this size for live sources
TRACE_FRAME_MAX_SIDE = 768
TRACE_FRAME_QUALITY = 75
PROMPT_LABEL = "production"
PROMPT_CACHE_TTL_S = 300.0
PROMPT_FETCH_TIMEOUT_S = 3.0
LANGFUSE_HOST = "https://cloud.langfuse.com"  # the SDK's own default
LANGFUSE_TIMEOUT_S = 5.0
OUTBOX_MAX_MB = 500.0
OUTBOX_SEND_TIMEOUT_S = 10.0  # outbox send: no frame waits on it
METRICS_HOST = "127.0.0.1"
QUERY_LIMIT = 10

# -- scores and outages ---------------------------------------------------------------------------
VLM_WORST_MS = 5000.0  # a caption this slow scores 0 for latency
LLM_WORST_MS = 30000.0
OUTAGE_REPORT_EVERY_S = 600.0

# -- alerts and notifications (--alert, --notify) -------------------------------------------------
ALERT_COOLDOWN_S = 60.0  # a rule notifies a source at most once in this many seconds
NOTIFY_FIRST = True  # a notification on motion start, updated with the caption
NOTIFY_SNAPSHOTS = False  # frames go to a broker only when asked
NOTIFY_QUEUE_MAX = 1000  # notifications kept per target while it is down; past it the oldest go
NOTIFY_TIMEOUT_S = 10.0  # one webhook request, one MQTT publish acknowledgement
NOTIFY_BACKOFF_MAX_S = 60.0  # retries of a target that is down: 0.5 s doubling to this
MQTT_PREFIX = "video_summarizer"  # the topics' first level without a /prefix in the URL
HA_DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's default discovery prefix
