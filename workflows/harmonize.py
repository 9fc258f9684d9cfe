"""Harmonization of one T1w run: the workflow other pipelines embed."""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmony.interfaces.harmonization import HarmonizeSlices, PrepareT1w, ReassembleT1w
from bids_harmony.settings import HarmonizationParams

# What each node may take, above its peak measured on a simulated 1 mm head with the bundled model
# and the default batch of 32 slices (0.59, 0.58 and 0.65 GB, docs/app.md), with room for larger
# models; MultiProc schedules by these within --mem-gb.
PREPARE_MEM_GB = 1.0
HARMONIZE_MEM_GB = 1.5
REASSEMBLE_MEM_GB = 1.0


METHOD_WORDS = {
    "bids_harmony": "bids_harmony's variant of the authors' May-2023 loop",
    "arxiv-v1": "the authors' May-2023 loop",
    "camera-ready": "the authors' published (camera-ready) loop",
}
FIDELITY_WORDS = {
    "correlation": "the Pearson correlation with the input",
    "batch-correlation": "the correlation with the input as the authors' May-2023 code computes it",
    "cosine": "the cosine similarity with the input",
}
EDGE_WORDS = {
    "highpass": "its high-pass (DCT) edges",
    "sobel-tv": "the Sobel total variation in the input's flat parts",
    "sobel-sign": "the Sobel gradients' direction at the input's edges",
}


def method_description(params: HarmonizationParams) -> str:
    """The methods paragraph's account of the optimisation, from the settings actually used."""
    method, changed = params.method()
    origin = METHOD_WORDS[method] + (f", with {', '.join(f'{k} = {v}' for k, v in changed.items())}"
                                     if changed else "")
    latent = (f"z <- (1 - alpha) z, alpha = {params.alpha}" if params.alpha == params.alpha2 else
              f"alpha = {params.alpha}, alpha2 = {params.alpha2}")
    steps = []
    if params.target_background:
        steps.append("below the input's foreground, the input's own texture was kept at the target's "
                     "background level")
    if params.anchor_level:
        steps.append("each slice was put at the input slice's white-matter level")
    if params.smooth_across_slices:
        steps.append("the change was smoothed across neighbouring slices")
    return (f"optimised for {params.iterations} iterations ({origin}), alternating a fidelity step on "
            f"{FIDELITY_WORDS[params.fidelity]} (beta1 = {params.beta1}) and on {EDGE_WORDS[params.edge]} "
            f"(beta2 = {params.beta2}) with a likelihood step in the flow's latent space ({latent}); the "
            f"result was the last {'flow output' if params.result == 'flow' else 'fidelity step'}. "
            + (f"{'; '.join(steps).capitalize()}, and the" if steps else "The")
            + " volume was resampled back onto the image's native grid.")


def init_harmonize_t1w_wf(
    *,
    model_file: str,
    params: HarmonizationParams | None = None,
    device: str = "cpu",
    strict: bool = False,
    omp_nthreads: int = 1,
    harmonize_plugin_args: dict | None = None,
    name: str = "harmonize_t1w_wf",
) -> Workflow:
    """
    Harmonize one T1w image to the model's target scanner with BlindHarmony.

    The T1w is checked and placed on the model's 1.2 mm slice grid (CPU), its slices are
    optimised against the target flow (the GPU node when ``device`` is ``"cuda"``), and the
    volume is reassembled on its native grid (CPU). Nodes pass files, so the work dir caches
    every stage; :func:`bids_harmony.harmonize.harmonize_image` runs the same functions in one
    process and gives the same image.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bids_harmony.model import bundled_model_path
            from bids_harmony.workflows import init_harmonize_t1w_wf
            wf = init_harmonize_t1w_wf(model_file=str(bundled_model_path()))

    Parameters
    ----------
    model_file : :obj:`str`
        The target-scanner model (``bids_harmony-train``), or the bundled demo model.
    params : :class:`~bids_harmony.settings.HarmonizationParams`
        The optimisation's settings (default: the defaults).
    device : :obj:`str`
        ``"cpu"`` or ``"cuda"`` (the harmonization node then takes one of MultiProc's GPU slots);
        ``"auto"`` leaves the choice to the machine that runs the node (for plugins that send
        nodes elsewhere, such as SLURMGraph).
    strict : :obj:`bool`
        An input that does not look like a T1w is an error instead of a warning.
    omp_nthreads : :obj:`int`
        Threads for torch and BLAS in each node.
    harmonize_plugin_args : :obj:`dict`
        Nipype ``plugin_args`` of the harmonization node alone, e.g. its own ``sbatch_args``
        asking for a GPU under SLURMGraph (Nipype's SLURM plugins know nothing of GPUs).
    name : :obj:`str`
        Name of the workflow.

    Inputs
    ------
    t1w
        The T1w image (NIfTI).

    Outputs
    -------
    t1w_harmonized
        The harmonized T1w on its native grid, in the source's intensity units.
    t1w_harmonized_grid
        The harmonized T1w on the model's 1.2 mm slice grid.
    t1w2grid_xfm
        The rigid placement (ITK text): resamples the T1w onto the grid.
    slices_file
        The source's normalised slices on that grid (``.npy``).
    geometry_file
        Per-slice ranges, positions and validity (JSON).
    contrast_agreement
        The tissue-order agreement of the input with the target's T1w contrast.
    warnings
        Warnings about the input (e.g. not T1w-like).
    device
        Where the optimisation ran.

    """
    params = params or HarmonizationParams()
    workflow = Workflow(name=name)
    workflow.__desc__ = f"""
The T1-weighted image was harmonized to the appearance of a target scanner with BlindHarmony
[@blindharmony], using a normalizing flow (Neural Spline Flow [@nsf], implemented with nflows
[@nflows]) trained only on T1-weighted images of the target scanner. The image was rigidly
registered to the MNI152NLin2009cSym template [@mni152nlin2009csym] with ANTs [@ants] to place
it on the model's grid of axial slices (1.2 mm isotropic voxels unless the model was trained
otherwise); each slice was min-max normalised and {method_description(params)}
"""
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(
        niu.IdentityInterface(fields=["t1w_harmonized", "t1w_harmonized_grid", "t1w2grid_xfm",
                                      "slices_file", "geometry_file", "contrast_agreement", "warnings", "device"]),
        name="outputnode",
    )
    prepare = pe.Node(PrepareT1w(model_file=model_file, strict=strict, num_threads=omp_nthreads),
                      name="prepare", mem_gb=PREPARE_MEM_GB, n_procs=omp_nthreads)
    # a GPU node takes n_procs GPU slots too, so it asks for one; its threads are an input
    harmonize = pe.Node(
        HarmonizeSlices(model_file=model_file, device=device, use_gpu=device == "cuda",
                        num_threads=omp_nthreads, **params.optimisation_settings()),
        name="harmonize", mem_gb=HARMONIZE_MEM_GB, n_procs=1 if device == "cuda" else omp_nthreads,
    )
    harmonize.plugin_args = dict(harmonize_plugin_args or {})
    reassemble = pe.Node(ReassembleT1w(num_threads=omp_nthreads, **params.reassemble_settings()),
                         name="reassemble", mem_gb=REASSEMBLE_MEM_GB, n_procs=omp_nthreads)

    workflow.connect([
        (inputnode, prepare, [("t1w", "in_file")]),
        (inputnode, reassemble, [("t1w", "in_file")]),
        (prepare, harmonize, [("slices_file", "slices_file"), ("geometry_file", "geometry_file")]),
        (prepare, reassemble, [("slices_file", "slices_file"), ("geometry_file", "geometry_file")]),
        (harmonize, reassemble, [("harmonized_file", "harmonized_file")]),
        (prepare, outputnode, [("transform_file", "t1w2grid_xfm"), ("slices_file", "slices_file"),
                               ("geometry_file", "geometry_file"),
                               ("contrast_agreement", "contrast_agreement"), ("warnings", "warnings")]),
        (harmonize, outputnode, [("device", "device")]),
        (reassemble, outputnode, [("out_file", "t1w_harmonized"), ("out_grid", "t1w_harmonized_grid")]),
    ])  # fmt: skip
    return workflow
