"""Audio rows: decode (WAV, FLAC, MP3 through libsndfile), down-mix to mono, resample to 16 kHz (soxr), log-mel
spectrogram and Whisper input features, transcript tokenized as labels; undecodable clips quarantined.

The log-mel (`n_mels` bins, `win_ms` window, `hop_ms` hop, `n_fft`) is for any acoustic model; the Whisper features are
what `WhisperFeatureExtractor` (built locally from its parameters, no download) makes: 80 x 3000 for a 30 s
window, padded or cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ray_jobs import schema
from ray_jobs.ingest.manifest import FILE, require_file
from ray_jobs.steps.base import Stage

DURATION, SAMPLE_RATE, LOG_MEL, WHISPER, LABELS = "duration_s", "source_rate", "log_mel", "whisper_features", "labels"
TARGET_RATE = 16_000


@dataclass(frozen=True)
class AudioConfig:
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    # FFT size of the log-mel: 0 = the window rounded up to a power of two (512 for 25 ms at 16 kHz); 1024 (the
    # seed's recipe) zero-pads the same window for finer frequency bins. A power of two >= the window.
    n_fft: int = 0
    whisper_features: bool = True
    # Longer clips are quarantined (split them first), from the length in the file's header before a sample is
    # decoded: 600 s at 16 kHz is 38 MB of float32 samples plus 60,000 log-mel frames (19 MB); a 10-hour file
    # decoded first would be 2.3 GB before the limit said no.
    max_seconds: float = 600.0
    # The transcript's labels: "" = the run's text tokenizer (tokenize.tokenizer); else a local folder of a Whisper
    # tokenizer (tokenizer.json, or vocab.json + merges.txt, with Whisper's special tokens; never fetched), and
    # the labels are what WhisperTokenizer(language, task) makes for training: <|startoftranscript|><|en|>
    # <|transcribe|><|notimestamps|> + the text + <|endoftext|>.
    tokenizer: str = ""
    language: str = "english"  # Whisper's language (name or code) and task for those labels
    task: str = "transcribe"

    def __post_init__(self) -> None:
        if self.n_mels < 1 or self.win_ms <= 0 or self.hop_ms <= 0:
            raise ValueError("ingest.audio.n_mels, win_ms and hop_ms must be positive")
        win = int(TARGET_RATE * self.win_ms / 1000)
        if self.n_fft and (self.n_fft < win or self.n_fft & (self.n_fft - 1)):
            raise ValueError(f"ingest.audio.n_fft must be 0 (auto) or a power of two >= the window of {win} samples "
                             f"({self.win_ms:g} ms at 16 kHz); got {self.n_fft}: e.g. n_fft = 1024")
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"ingest.audio.task must be transcribe or translate; got {self.task!r}")


def load_mono_16k(path: str, max_seconds: float = 0.0) -> tuple[np.ndarray, int, float]:
    """(float32 mono samples at 16 kHz, the file's sample rate, duration in seconds); ValueError if undecodable,
    cut short, or (from the header, before a sample is read) longer than `max_seconds` (0 = no limit)."""
    import soundfile as sf
    import soxr

    require_file(path)
    try:
        info = sf.info(path)
        if info.frames == 0:
            raise ValueError("empty audio: no samples")
        if max_seconds and info.duration > max_seconds:
            raise ValueError(f"{info.duration:.0f} s long by its header, over ingest.audio.max_seconds = "
                             f"{max_seconds:.0f}; split the clip")
        declared = _declared_cut(info.extra_info)
        if declared:
            raise ValueError(f"cut short: its header declares {declared[0]:,} bytes of samples, the file holds "
                             f"{declared[1]:,}; fetch or export it again")
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise ValueError(f"undecodable audio: {e}") from e
    if len(data) < info.frames:
        raise ValueError(f"cut short: its header declares {info.frames:,} frames ({info.duration:.2f} s), "
                         f"{len(data):,} decoded; fetch or export it again")
    bad = data.size - int(np.isfinite(data).sum())
    if bad:
        raise ValueError(f"{bad:,} of {data.size:,} samples are NaN or infinite: the float data is corrupt")
    mono = data.mean(axis=1)
    out = mono if rate == TARGET_RATE else soxr.resample(mono, rate, TARGET_RATE, quality="HQ")
    return out.astype(np.float32), rate, len(mono) / rate


def _declared_cut(log: str) -> tuple[int, int] | None:
    """(bytes of samples the header declares, bytes the file holds) when the file is shorter: libsndfile trims
    its frame count to the file and says so only in its log ("data : 425786 (should be 212871)" for a WAV,
    the same for AIFF's SSND chunk)."""
    import re

    m = re.search(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", log, re.M)
    return (int(m[1]), int(m[2])) if m and int(m[1]) > int(m[2]) else None


def log_mel(samples: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[n_mels x frames] natural-log mel power spectrogram (Hann window, Slaney mel scale), float32."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    win = int(TARGET_RATE * cfg.win_ms / 1000)
    hop = int(TARGET_RATE * cfg.hop_ms / 1000)
    n_fft = cfg.n_fft or 1 << (win - 1).bit_length()
    mel = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=cfg.n_mels, min_frequency=0.0,
                          max_frequency=TARGET_RATE / 2, sampling_rate=TARGET_RATE, norm="slaney",
                          mel_scale="slaney")
    spec = spectrogram(samples, window_function(win, "hann", frame_length=n_fft), frame_length=n_fft,
                       hop_length=hop, power=2.0, mel_filters=mel, log_mel="log", mel_floor=1e-10)
    return spec.astype(np.float32)


def whisper_labels(folder: str, language: str, task: str):
    """text -> Whisper's training labels (prefix tokens, text, <|endoftext|>), from a local tokenizer folder."""
    from pathlib import Path

    from transformers import WhisperTokenizer

    if not Path(folder).is_dir():
        raise ValueError(f"ingest.audio.tokenizer must be a local folder holding a Whisper tokenizer (tokenizer.json, "
                         f"or vocab.json + merges.txt); {folder!r} is not a folder. Nothing is fetched from the hub: "
                         f"save one there first (WhisperTokenizer.from_pretrained(...).save_pretrained(folder))")
    tok = WhisperTokenizer.from_pretrained(folder, language=language, task=task, predict_timestamps=False,
                                           local_files_only=True)
    if tok.convert_tokens_to_ids("<|startoftranscript|>") in (None, tok.unk_token_id):
        raise ValueError(f"{folder} is not a Whisper tokenizer: it has no <|startoftranscript|> token; give the "
                         f"folder of a Whisper model's tokenizer, or ingest.audio.tokenizer = '' for the run's own")
    return lambda text: tok(text).input_ids


class AudioStage(Stage):
    """Audio rows -> duration_s, source_rate, log_mel, whisper_features (lists of float32 rows), labels (the
    transcript's token ids); a clip that cannot be decoded keeps its row, quarantined."""

    stateful = True  # the tokenizer and the Whisper extractor load once per actor

    def __init__(self, cfg: AudioConfig, tokenizer: str) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self._labels = self._whisper = None

    def setup(self) -> None:
        from transformers import WhisperFeatureExtractor

        from ray_jobs.steps.tokenize.tokenizer import load_tokenizer

        if self.cfg.tokenizer:
            self._labels = whisper_labels(self.cfg.tokenizer, self.cfg.language, self.cfg.task)
        else:
            tok = load_tokenizer(self.tokenizer)
            self._labels = lambda text: tok.encode(text, add_special_tokens=False).ids
        self._whisper = WhisperFeatureExtractor(feature_size=80, sampling_rate=TARGET_RATE)

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._labels is None:
            self.setup()
        errors = table[schema.ERROR].to_pylist()
        texts = table["transcription"].to_pylist()
        cols: dict[str, list] = {DURATION: [], SAMPLE_RATE: [], LOG_MEL: [], WHISPER: [], LABELS: []}
        for i, path in enumerate(table[FILE].to_pylist()):
            got = dict.fromkeys(cols)
            if errors[i] is None:
                try:
                    samples, rate, seconds = load_mono_16k(path, self.cfg.max_seconds)
                except ValueError as e:
                    errors[i] = f"{path}: {e}"
                else:
                    got = {DURATION: seconds, SAMPLE_RATE: rate, LOG_MEL: log_mel(samples, self.cfg).tolist(),
                           WHISPER: (self._whisper(samples, sampling_rate=TARGET_RATE, return_tensors="np")
                                     .input_features[0].tolist() if self.cfg.whisper_features else None),
                           LABELS: self._labels(texts[i] or "")}
            for k in cols:
                cols[k].append(got[k])
        matrix = pa.list_(pa.list_(pa.float32()))
        types = {DURATION: pa.float64(), SAMPLE_RATE: pa.int32(), LOG_MEL: matrix, WHISPER: matrix,
                 LABELS: pa.list_(pa.int32())}
        out = table.set_column(table.schema.get_field_index(schema.ERROR), schema.ERROR, pa.array(errors, pa.string()))
        for k, v in cols.items():
            out = out.append_column(k, pa.array(v, types[k]))
        return out
