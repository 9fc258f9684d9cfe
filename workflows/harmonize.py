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
otherwise); each slice was min-max normalised and
optimised for {params.iterations} iterations, alternating a fidelity step on the correlation
with the input (beta1 = {params.beta1}) and on its {params.edge} edges (beta2 = {params.beta2})
with a likelihood step in the flow's latent space (alpha = {params.alpha}, alpha2 =
{params.alpha2}). The change was smoothed across neighbouring slices and the volume was
resampled back onto the image's native grid.
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
                        num_threads=omp_nthreads, **params.to_dict()),
        name="harmonize", mem_gb=HARMONIZE_MEM_GB, n_procs=1 if device == "cuda" else omp_nthreads,
    )
    harmonize.plugin_args = dict(harmonize_plugin_args or {})
    reassemble = pe.Node(ReassembleT1w(num_threads=omp_nthreads), name="reassemble",
                         mem_gb=REASSEMBLE_MEM_GB, n_procs=omp_nthreads)

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
