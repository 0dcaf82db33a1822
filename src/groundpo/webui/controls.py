"""LlamaBoard controls of groundpo's YAML keys: one definition per key, in one place.

A :class:`~groundpo.registry.Control` says how LlamaBoard shows one YAML key: its kind (slider,
number, dropdown, checkbox), its label and info text in every LlamaBoard language (en, ru, zh,
ko, ja), its range and step or its choices. Controls are defined per key, never per stage: a
stage's controls are derived from the keys it takes (:func:`controls_for`, which is what
``StageSpec.controls`` returns), so a new stage shows its hyper-parameters in LlamaBoard without
any code in the UI layer.

Rules:

- Defaults are never written here. The value a control starts with is the default of the
  dataclass field behind its key (:func:`default_value`): ``groundpo.hparams`` for our keys,
  upstream's ``FinetuningArguments`` for ``pref_beta``.
- Every groundpo stage shows :data:`COMMON_KEYS` first: β is upstream's ``pref_beta`` and every
  groundpo objective reads it (``groundpo.hparams``: "β is upstream's pref_beta throughout").
- A key of a stage's argument dataclasses that has no entry in :data:`CONTROLS` gets an
  automatic control from its dataclass field (:func:`automatic_control`): a checkbox for
  ``bool``, a number box for ``int``/``float``, a dropdown for a ``Literal`` (``"none"`` added
  when the field may be ``None``). Its label is the YAML key itself in every language and its
  info the field's ``help`` text. Fields of other types (free strings, lists) get no control;
  they stay reachable through LlamaBoard's "Extra arguments" JSON box. Add an entry to
  :data:`CONTROLS` to give a key proper labels and a range.
- A dropdown without ``choices`` takes them from the field's ``Literal`` annotation
  (:func:`choices_of`), so choices are not written twice either.
- A stage without keys (``base_dpo``) shows β only; a stage whose objective reads no β
  (``StageSpec.reads_beta``: MBPO) shows its own keys only.

``groundpo.integration.webui`` turns these definitions into Gradio components; it contains no
per-stage or per-key code.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any, Literal, Union, get_args, get_origin

from groundpo.hparams import CORRUPTIONS
from groundpo.registry import LANGS, Control

# The title of a stage's accordion; ``{stage}`` is the stage's label in that language.
ACCORDION_TITLE: dict[str, str] = {
    "en": "{stage} configurations",
    "ru": "Конфигурации {stage}",
    "zh": "{stage} 参数设置",
    "ko": "{stage} 구성",
    "ja": "{stage} 設定",
}

# Upstream keys that every groundpo stage reads; shown first in every stage's accordion.
COMMON_KEYS: tuple[str, ...] = ("pref_beta",)

# What a dropdown shows for a key whose value may be None (LlamaBoard's own convention, as for
# rope_scaling and quantization_bit); it is written to the config as "not set".
NONE_CHOICE = "none"


def _control(key: str, kind: str, label: dict[str, str], info: dict[str, str], **kwargs) -> Control:
    return Control(key=key, kind=kind, label=label, info=info, **kwargs)


_BETA_RANGE = {"minimum": 0.0, "maximum": 1.0, "step": 0.01}

CONTROLS: dict[str, Control] = {
    c.key: c
    for c in (
        _control(
            "pref_beta",
            "slider",
            label={"en": "β (pref_beta)", "ru": "β (pref_beta)", "zh": "β（pref_beta）", "ko": "β (pref_beta)", "ja": "β（pref_beta）"},
            info={
                "en": "Weight β of the log-ratio to the reference model (LLaMA-Factory's pref_beta).",
                "ru": "Вес β логарифма отношения к эталонной модели (pref_beta из LLaMA-Factory).",
                "zh": "相对参考模型的对数比的权重 β（即 LLaMA-Factory 的 pref_beta）。",
                "ko": "참조 모델 대비 로그 비율의 가중치 β (LLaMA-Factory의 pref_beta).",
                "ja": "参照モデルとの対数比の重み β（LLaMA-Factory の pref_beta）。",
            },
            **_BETA_RANGE,
        ),
        _control(
            "mod_beta_inv",
            "slider",
            label={"en": "β_inv (invariance)", "ru": "β_inv (инвариантность)", "zh": "β_inv（不变性）", "ko": "β_inv (불변성)", "ja": "β_inv（不変性）"},
            info={
                "en": "Weight of the invariance term: the irrelevant modality is corrupted. Paper: 0.02.",
                "ru": "Вес члена инвариантности: искажается нерелевантная модальность. В статье: 0.02.",
                "zh": "不变性项的权重：破坏与问题无关的模态。论文取值：0.02。",
                "ko": "불변성 항의 가중치: 관련 없는 모달리티를 손상시킵니다. 논문: 0.02.",
                "ja": "不変性項の重み：無関係なモダリティを破損させます。論文: 0.02。",
            },
            **_BETA_RANGE,
        ),
        _control(
            "mod_beta_sens",
            "slider",
            label={"en": "β_sens (sensitivity)", "ru": "β_sens (чувствительность)", "zh": "β_sens（敏感性）", "ko": "β_sens (민감도)", "ja": "β_sens（感度）"},
            info={
                "en": "Weight of the sensitivity term: the relevant modality is corrupted. Paper: 0.05.",
                "ru": "Вес члена чувствительности: искажается релевантная модальность. В статье: 0.05.",
                "zh": "敏感性项的权重：破坏与问题相关的模态。论文取值：0.05。",
                "ko": "민감도 항의 가중치: 관련 모달리티를 손상시킵니다. 논문: 0.05.",
                "ja": "感度項の重み：関連するモダリティを破損させます。論文: 0.05。",
            },
            **_BETA_RANGE,
        ),
        _control(
            "mod_gamma_lpd",
            "slider",
            label={
                "en": "γ_LPD (language prior)",
                "ru": "γ_LPD (языковой априор)",
                "zh": "γ_LPD（语言先验）",
                "ko": "γ_LPD (언어 사전)",
                "ja": "γ_LPD（言語事前分布）",
            },
            info={
                "en": "0 = MoD-DPO; > 0 = MoD-DPO++ with a text-only reference pass. Paper (MoD-DPO++): 0.05.",
                "ru": "0 = MoD-DPO; > 0 = MoD-DPO++ с проходом эталонной модели только по тексту. В статье (MoD-DPO++): 0.05.",
                "zh": "0 为 MoD-DPO；大于 0 为 MoD-DPO++，增加仅文本的参考模型前向。论文（MoD-DPO++）取值：0.05。",
                "ko": "0 = MoD-DPO, 0보다 크면 텍스트 전용 참조 패스를 쓰는 MoD-DPO++. 논문(MoD-DPO++): 0.05.",
                "ja": "0 = MoD-DPO、0 より大きい = テキストのみの参照パスを使う MoD-DPO++。論文（MoD-DPO++）: 0.05。",
            },
            **_BETA_RANGE,
        ),
        _control(
            "mod_tau",
            "dropdown",
            label={"en": "τ reading", "ru": "Вариант τ", "zh": "τ 的取法", "ko": "τ 해석", "ja": "τ の解釈"},
            info={
                "en": "paper: τ = β + β_inv + β_sens (Eq. 8); derived: τ = β + β_inv − β_sens (Eq. 13-16).",
                "ru": "paper: τ = β + β_inv + β_sens (ур. 8); derived: τ = β + β_inv − β_sens (ур. 13-16).",
                "zh": "paper：τ = β + β_inv + β_sens（式 8）；derived：τ = β + β_inv − β_sens（式 13-16）。",
                "ko": "paper: τ = β + β_inv + β_sens (식 8), derived: τ = β + β_inv − β_sens (식 13-16).",
                "ja": "paper: τ = β + β_inv + β_sens（式 8）、derived: τ = β + β_inv − β_sens（式 13-16）。",
            },
        ),
        _control(
            "mod_corruption",
            "dropdown",
            label={"en": "Corruption", "ru": "Искажение", "zh": "破坏方式", "ko": "손상 방식", "ja": "破損方法"},
            info={
                "en": "How a modality is corrupted: diffusion (VCD forward noise), gaussian, zeros or shuffle.",
                "ru": "Способ искажения модальности: diffusion (прямой шум VCD), gaussian, zeros или shuffle.",
                "zh": "模态的破坏方式：diffusion（VCD 前向加噪）、gaussian、zeros 或 shuffle。",
                "ko": "모달리티 손상 방식: diffusion (VCD 순방향 노이즈), gaussian, zeros, shuffle.",
                "ja": "モダリティの破損方法：diffusion（VCD の前向きノイズ）、gaussian、zeros、shuffle。",
            },
        ),
        _control(
            "share_prompt_prefix",
            "checkbox",
            label={"en": "Share the prompt prefix", "ru": "Общий префикс запроса", "zh": "共享提示前缀", "ko": "프롬프트 접두사 공유", "ja": "プロンプト接頭辞を共有"},
            info={
                "en": "Score both answers of a pair in one sequence: the prompt and its media run once. Same log-probs, faster.",
                "ru": "Оба ответа пары в одной последовательности: запрос и его медиа считаются один раз. Те же вероятности, быстрее.",
                "zh": "一对回答在同一序列中打分：提示及其媒体只计算一次。对数概率不变，更快。",
                "ko": "한 쌍의 두 답변을 한 시퀀스에서 평가: 프롬프트와 미디어를 한 번만 계산. 같은 로그 확률, 더 빠름.",
                "ja": "ペアの両回答を 1 系列で評価：プロンプトとメディアは 1 回だけ計算。対数確率は同じで高速。",
            },
        ),
        _control(
            "share_media_encodings",
            "checkbox",
            label={"en": "Share media encodings", "ru": "Общие кодировки медиа", "zh": "共享媒体编码", "ko": "미디어 인코딩 공유", "ja": "メディア符号化を共有"},
            info={
                "en": "Each distinct image, video or audio goes through a frozen encoder once per step, for every pass.",
                "ru": "Каждое изображение, видео или аудио проходит замороженный кодировщик один раз за шаг для всех проходов.",
                "zh": "每个不同的图像、视频或音频在每步中只经过冻结的编码器一次，供所有前向共用。",
                "ko": "서로 다른 이미지·비디오·오디오는 스텝마다 고정된 인코더를 한 번만 통과하고 모든 패스가 공유.",
                "ja": "異なる画像・動画・音声はステップごとに凍結エンコーダを 1 回だけ通り、全パスで共有。",
            },
        ),
        _control(
            "mod_corruption_visual",
            "dropdown",
            label={"en": "Visual corruption", "ru": "Искажение изображения", "zh": "视觉破坏方式", "ko": "시각 손상 방식", "ja": "視覚の破損方法"},
            info={
                "en": "Override for images and video frames; none = same as Corruption.",
                "ru": "Переопределение для изображений и кадров видео; none = как в «Искажение».",
                "zh": "图像和视频帧的单独设置；none 表示与“破坏方式”相同。",
                "ko": "이미지와 비디오 프레임용 재정의. none = 손상 방식과 동일.",
                "ja": "画像と動画フレーム用の上書き。none = 破損方法と同じ。",
            },
            choices=(NONE_CHOICE, *CORRUPTIONS),
        ),
        _control(
            "mod_corruption_audio",
            "dropdown",
            label={"en": "Audio corruption", "ru": "Искажение аудио", "zh": "音频破坏方式", "ko": "오디오 손상 방식", "ja": "音声の破損方法"},
            info={
                "en": "Override for audio; none = same as Corruption.",
                "ru": "Переопределение для аудио; none = как в «Искажение».",
                "zh": "音频的单独设置；none 表示与“破坏方式”相同。",
                "ko": "오디오용 재정의. none = 손상 방식과 동일.",
                "ja": "音声用の上書き。none = 破損方法と同じ。",
            },
            choices=(NONE_CHOICE, *CORRUPTIONS),
        ),
        _control(
            "mod_diffusion_steps",
            "slider",
            label={"en": "Diffusion steps", "ru": "Шаги диффузии", "zh": "扩散步数", "ko": "확산 스텝", "ja": "拡散ステップ"},
            info={
                "en": "Step t of the 1000-step VCD noise schedule (larger = noisier). Paper: 500.",
                "ru": "Шаг t 1000-шагового расписания шума VCD (больше = сильнее шум). В статье: 500.",
                "zh": "1000 步 VCD 加噪调度中的步数 t（越大噪声越强）。论文取值：500。",
                "ko": "1000 스텝 VCD 노이즈 스케줄의 스텝 t (클수록 노이즈 증가). 논문: 500.",
                "ja": "1000 ステップの VCD ノイズスケジュールにおけるステップ t（大きいほどノイズが強い）。論文: 500。",
            },
            minimum=0,
            maximum=999,
            step=1,
        ),
        _control(
            "mod_noise_std",
            "number",
            label={"en": "Gaussian noise std", "ru": "СКО гауссова шума", "zh": "高斯噪声标准差", "ko": "가우시안 노이즈 표준편차", "ja": "ガウスノイズの標準偏差"},
            info={
                "en": "Standard deviation of the gaussian corruption.",
                "ru": "Стандартное отклонение искажения gaussian.",
                "zh": "gaussian 破坏方式的噪声标准差。",
                "ko": "gaussian 손상의 표준편차.",
                "ja": "gaussian 破損の標準偏差。",
            },
            minimum=0.0,
            step=0.1,
        ),
        _control(
            "mod_alternate_modalities",
            "checkbox",
            label={"en": "Alternate modalities", "ru": "Чередовать модальности", "zh": "交替模态", "ko": "모달리티 교대", "ja": "モダリティを交互に"},
            info={
                "en": "Modality-homogeneous batches that alternate visual and audio prompts.",
                "ru": "Однородные по модальности батчи, чередующие визуальные и аудиозапросы.",
                "zh": "按模态组成批次，视觉与音频问题交替出现。",
                "ko": "모달리티별 동질 배치로 시각/오디오 프롬프트를 번갈아 학습합니다.",
                "ja": "モダリティごとに揃えたバッチで、視覚と音声のプロンプトを交互に学習します。",
            },
        ),
        _control(
            "mod_precompute_reference",
            "checkbox",
            label={"en": "Precompute reference", "ru": "Предвычислить эталон", "zh": "预计算参考模型", "ko": "참조 사전 계산", "ja": "参照を事前計算"},
            info={
                "en": "Compute the reference log-probs once before training.",
                "ru": "Вычислить логарифмы вероятностей эталонной модели один раз до обучения.",
                "zh": "训练前一次性计算参考模型的对数概率。",
                "ko": "학습 전에 참조 모델의 로그 확률을 한 번 계산합니다.",
                "ja": "学習前に参照モデルの対数確率を一度だけ計算します。",
            },
        ),
    )
}


# ---------------------------------------------------------------- fields behind the keys
def _argument_classes(spec=None) -> tuple[type, ...]:
    """Dataclasses that may define a key: the stage's own, then the joined finetuning arguments."""
    from groundpo.hparams import GroundpoFinetuningArguments

    own = tuple(spec.arguments) if spec is not None else ()
    return own + (GroundpoFinetuningArguments,)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_of(key: str, spec=None) -> tuple[type, Field] | None:
    """The dataclass and field that define ``key`` (the stage's dataclasses first), or None."""
    from groundpo.registry import stages

    classes = list(_argument_classes(spec)) + [cls for s in stages() for cls in s.arguments]
    for cls in classes:
        for f in fields(cls):
            if f.name == key:
                return cls, f
    return None


def default_value(key: str, spec=None) -> Any:
    """The dataclass default of ``key``: the one source of every control's initial value."""
    if key == "pref_beta" and spec is not None and getattr(spec, "default_beta", None) is not None:
        return spec.default_beta  # the stage's paper β (JoMPO: 0.05), as a config without pref_beta gets
    found = field_of(key, spec)
    if found is None:
        raise KeyError(f"No argument dataclass defines `{key}`.")
    f = found[1]
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def value_type(key: str, spec=None) -> Any:
    """The resolved type annotation of ``key``."""
    found = field_of(key, spec)
    if found is None:
        return Any
    cls, f = found
    return _hints(cls).get(f.name, Any)


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return Union[tuple(args)], optional  # noqa: UP007
    return tp, False


# ---------------------------------------------------------------- controls of a stage
def automatic_control(key: str, spec=None) -> Control | None:
    """A control built from the dataclass field of ``key`` (for keys without a :data:`CONTROLS` entry)."""
    found = field_of(key, spec)
    if found is None:
        return None
    help_text = str(found[1].metadata.get("help", ""))
    label = {lang: key for lang in LANGS}
    info = {lang: help_text for lang in LANGS} if help_text else {}
    tp, optional = _split_optional(value_type(key, spec))
    if tp is bool and not optional:
        return Control(key=key, kind="checkbox", label=label, info=info)
    if tp in (int, float) and not optional:
        return Control(key=key, kind="number", label=label, info=info, step=1 if tp is int else 0.01)
    if get_origin(tp) is Literal:
        return Control(key=key, kind="dropdown", label=label, info=info)
    return None


def choices_of(control: Control, spec=None) -> tuple[str, ...]:
    """A dropdown's choices: the control's own, else the ``Literal`` values of its field."""
    if control.choices:
        return tuple(control.choices)
    tp, optional = _split_optional(value_type(control.key, spec))
    if get_origin(tp) is Literal:
        return ((NONE_CHOICE,) if optional else ()) + tuple(str(c) for c in get_args(tp))
    return ()


def controls_for(spec) -> tuple[Control, ...]:
    """The LlamaBoard controls of a stage: :data:`COMMON_KEYS`, then one per key of its dataclasses."""
    common = COMMON_KEYS if getattr(spec, "reads_beta", True) else ()  # MBPO reads no β
    result: list[Control] = [CONTROLS[key] for key in common]
    seen = set(common)
    for cls in spec.arguments:
        for f in fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            control = CONTROLS.get(f.name) or automatic_control(f.name, spec)
            if control is not None:
                result.append(control)
    return tuple(result)


# ---------------------------------------------------------------- texts per language
def label(control: Control, lang: str | None) -> str:
    return control.label.get(lang or "en") or control.label.get("en") or control.key


def info(control: Control, lang: str | None) -> str | None:
    return control.info.get(lang or "en") or control.info.get("en") or None


def stage_label(spec, lang: str | None) -> str:
    return spec.label.get(lang or "en") or spec.label["en"]


def accordion_title(spec, lang: str | None) -> str:
    template = ACCORDION_TITLE.get(lang or "en", ACCORDION_TITLE["en"])
    return template.format(stage=stage_label(spec, lang))


# ---------------------------------------------------------------- values between UI and YAML
def initial_value(control: Control, spec=None) -> Any:
    """What the control shows before the user touches it: the dataclass default."""
    value = default_value(control.key, spec)
    if value is None and control.kind == "dropdown":
        return NONE_CHOICE
    return value


def to_config_value(key: str, value: Any, spec=None) -> Any:
    """A control's value as the YAML value of ``key`` (typed by its dataclass field)."""
    tp, optional = _split_optional(value_type(key, spec))
    if value is None or (optional and value in ("", NONE_CHOICE)):
        return None
    if tp is bool:
        return bool(value)
    if tp is int:
        return round(float(value))
    if tp is float:
        return round(float(value), 10)  # a slider's 0.030000000000000002 is the 0.03 the user set
    if tp is str or get_origin(tp) is Literal:
        return str(value)
    return value
