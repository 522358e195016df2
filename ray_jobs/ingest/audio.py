"""Audio rows: decode (WAV, FLAC, MP3 through libsndfile), down-mix to mono, resample to 16 kHz (soxr), log-mel
spectrogram and Whisper input features, transcript tokenized as labels; undecodable clips quarantined.

The log-mel (`n_mels` bins, `win_ms` window, `hop_ms` hop) is for any acoustic model; the Whisper features are
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
    whisper_features: bool = True
    max_seconds: float = 600.0  # longer clips are quarantined (split them first): their features would be huge

    def __post_init__(self) -> None:
        if self.n_mels < 1 or self.win_ms <= 0 or self.hop_ms <= 0:
            raise ValueError("ingest.audio.n_mels, win_ms and hop_ms must be positive")


def load_mono_16k(path: str) -> tuple[np.ndarray, int, float]:
    """(float32 mono samples at 16 kHz, the file's sample rate, duration in seconds); ValueError if undecodable."""
    import soundfile as sf
    import soxr

    require_file(path)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise ValueError(f"undecodable audio: {e}") from e
    if data.size == 0:
        raise ValueError("empty audio: no samples")
    mono = data.mean(axis=1)
    out = mono if rate == TARGET_RATE else soxr.resample(mono, rate, TARGET_RATE, quality="HQ")
    return out.astype(np.float32), rate, len(mono) / rate


def log_mel(samples: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """[n_mels x frames] natural-log mel power spectrogram (Hann window, Slaney mel scale), float32."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    win = int(TARGET_RATE * cfg.win_ms / 1000)
    hop = int(TARGET_RATE * cfg.hop_ms / 1000)
    n_fft = 1 << (win - 1).bit_length()
    mel = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=cfg.n_mels, min_frequency=0.0,
                          max_frequency=TARGET_RATE / 2, sampling_rate=TARGET_RATE, norm="slaney",
                          mel_scale="slaney")
    spec = spectrogram(samples, window_function(win, "hann", frame_length=n_fft), frame_length=n_fft,
                       hop_length=hop, power=2.0, mel_filters=mel, log_mel="log", mel_floor=1e-10)
    return spec.astype(np.float32)


class AudioStage(Stage):
    """Audio rows -> duration_s, source_rate, log_mel, whisper_features (lists of float32 rows), labels (the
    transcript's token ids); a clip that cannot be decoded keeps its row, quarantined."""

    stateful = True  # the tokenizer and the Whisper extractor load once per actor

    def __init__(self, cfg: AudioConfig, tokenizer: str) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self._tok = self._whisper = None

    def setup(self) -> None:
        from transformers import WhisperFeatureExtractor

        from ray_jobs.steps.tokenize.tokenizer import load_tokenizer

        self._tok = load_tokenizer(self.tokenizer)
        self._whisper = WhisperFeatureExtractor(feature_size=80, sampling_rate=TARGET_RATE)

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._tok is None:
            self.setup()
        errors = table[schema.ERROR].to_pylist()
        texts = table["transcription"].to_pylist()
        cols: dict[str, list] = {DURATION: [], SAMPLE_RATE: [], LOG_MEL: [], WHISPER: [], LABELS: []}
        for i, path in enumerate(table[FILE].to_pylist()):
            got = dict.fromkeys(cols)
            if errors[i] is None:
                try:
                    samples, rate, seconds = load_mono_16k(path)
                    if seconds > self.cfg.max_seconds:
                        raise ValueError(f"{seconds:.0f} s long, over ingest.audio.max_seconds = "
                                         f"{self.cfg.max_seconds:.0f}; split the clip")
                except ValueError as e:
                    errors[i] = f"{path}: {e}"
                else:
                    got = {DURATION: seconds, SAMPLE_RATE: rate, LOG_MEL: log_mel(samples, self.cfg).tolist(),
                           WHISPER: (self._whisper(samples, sampling_rate=TARGET_RATE, return_tensors="np")
                                     .input_features[0].tolist() if self.cfg.whisper_features else None),
                           LABELS: self._tok.encode(texts[i] or "", add_special_tokens=False).ids}
            for k in cols:
                cols[k].append(got[k])
        matrix = pa.list_(pa.list_(pa.float32()))
        types = {DURATION: pa.float64(), SAMPLE_RATE: pa.int32(), LOG_MEL: matrix, WHISPER: matrix,
                 LABELS: pa.list_(pa.int32())}
        out = table.set_column(table.schema.get_field_index(schema.ERROR), schema.ERROR, pa.array(errors, pa.string()))
        for k, v in cols.items():
            out = out.append_column(k, pa.array(v, types[k]))
        return out
