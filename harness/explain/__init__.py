"""Grad-CAM (pytorch-grad-cam) and attention metrics, one concern per module (as
pytorch-grad-cam splits its base, methods and metrics): ``layers`` (which layer),
``cams`` (the maps), ``concentration``, ``faithfulness`` (deletion / insertion against a
random map), ``sanity`` (the randomisation check) and ``summary`` (all of them for a set of
images). What each measures, and why: docs/explain.md."""

from .cams import CONSTANT_RTOL, DEGENERATE_REASONS, METHODS, CamResult, cam_maps, degeneracy, gradcam
from .concentration import concentration, concentration_metrics, gini, normalised_entropy, top_share
from .faithfulness import BASELINES, confidence_change, deletion_insertion, perturbation_baseline, random_maps
from .layers import cam_layers, default_cam_layer, resolve_layer
from .sanity import randomisation_check, randomisation_layers, spearman_rows
from .summary import attention_report, attention_summary

__all__ = ["BASELINES", "CONSTANT_RTOL", "DEGENERATE_REASONS", "METHODS", "CamResult", "attention_report",
           "attention_summary", "cam_layers", "cam_maps", "concentration", "concentration_metrics", "confidence_change",
           "default_cam_layer", "degeneracy", "deletion_insertion", "gini", "gradcam", "normalised_entropy",
           "perturbation_baseline", "random_maps", "randomisation_check", "randomisation_layers", "resolve_layer",
           "spearman_rows", "top_share"]
