"""Methods boilerplate (``logs/CITATION.{md,bib,html}``): the workflows' ``__desc__`` paragraphs,
with the parameters actually used, and the references they cite."""
from __future__ import annotations

import html
import re
from pathlib import Path

from .atomic import atomic_write

#: key -> (BibTeX type, fields). Rendered into CITATION.bib and the HTML reference list.
REFERENCES: dict[str, tuple[str, dict[str, str]]] = {
    "blindharmony": ("inproceedings", {
        "author": "Jeong, Hwihun and Byun, Heejoon and Kang, Dong Un and Lee, Jongho",
        "title": "{BlindHarmony}: ``Blind'' Harmonization for {MR} Images via Flow Model",
        "booktitle": "Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)",
        "year": "2023", "eprint": "2305.10732", "archivePrefix": "arXiv"}),
    "nsf": ("inproceedings", {
        "author": "Durkan, Conor and Bekasov, Artur and Murray, Iain and Papamakarios, George",
        "title": "Neural Spline Flows",
        "booktitle": "Advances in Neural Information Processing Systems 32 (NeurIPS)",
        "year": "2019"}),
    "nflows": ("misc", {
        "author": "Durkan, Conor and Bekasov, Artur and Murray, Iain and Papamakarios, George",
        "title": "nflows: normalizing flows in {PyTorch}",
        "year": "2020", "url": "https://github.com/bayesiains/nflows"}),
    "nipype1": ("article", {
        "author": "Gorgolewski, Krzysztof and Burns, Christopher D. and Madison, Cindee and Clark, Dav "
                  "and Halchenko, Yaroslav O. and Waskom, Michael L. and Ghosh, Satrajit S.",
        "title": "Nipype: a flexible, lightweight and extensible neuroimaging data processing framework "
                 "in Python",
        "journal": "Frontiers in Neuroinformatics", "volume": "5", "pages": "13", "year": "2011",
        "doi": "10.3389/fninf.2011.00013"}),
    "pybids": ("article", {
        "author": "Yarkoni, Tal and Markiewicz, Christopher J. and de la Vega, Alejandro and "
                  "Gorgolewski, Krzysztof J. and others",
        "title": "{PyBIDS}: Python tools for {BIDS} datasets",
        "journal": "Journal of Open Source Software", "volume": "4", "number": "40", "pages": "1294",
        "year": "2019", "doi": "10.21105/joss.01294"}),
    "ants": ("article", {
        "author": "Avants, B. B. and Epstein, C. L. and Grossman, M. and Gee, J. C.",
        "title": "Symmetric diffeomorphic image registration with cross-correlation: evaluating "
                 "automated labeling of elderly and neurodegenerative brain",
        "journal": "Medical Image Analysis", "volume": "12", "number": "1", "pages": "26--41",
        "year": "2008", "doi": "10.1016/j.media.2007.06.004"}),
    "mni152nlin2009csym": ("article", {
        "author": "Fonov, Vladimir S. and Evans, Alan C. and McKinstry, Robert C. and Almli, C. Robert "
                  "and Collins, D. Louis",
        "title": "Unbiased nonlinear average age-appropriate brain templates from birth to adulthood",
        "journal": "NeuroImage", "volume": "47", "pages": "S102", "year": "2009",
        "doi": "10.1016/S1053-8119(09)70884-5"}),
    "deepbet": ("article", {
        "author": "Fisch, Lukas and Zumdick, Stefan and Barkhau, Carlotta and others",
        "title": "deepbet: Fast brain extraction of {T1}-weighted {MRI} using Convolutional Neural Networks",
        "journal": "Computers in Biology and Medicine", "year": "2024"}),
    "atropos": ("article", {
        "author": "Avants, Brian B. and Tustison, Nicholas J. and Wu, Jue and Cook, Philip A. and Gee, James C.",
        "title": "An open source multivariate framework for n-tissue segmentation with evaluation on public data",
        "journal": "Neuroinformatics", "volume": "9", "number": "4", "pages": "381--400", "year": "2011",
        "doi": "10.1007/s12021-011-9109-y"}),
}

_CITATION = re.compile(r"\[@([\w-]+)\]")
_EMPHASIS = re.compile(r"[*](.+?)[*]")
_DEEPBET = ("The brain was extracted with deepbet [@deepbet] before registration and harmonization, "
            "as the model was trained on extracted brains.")


def boilerplate_markdown(workflow, brain_extraction: bool = False) -> str:
    """The methods text of a :class:`~niworkflows.engine.workflows.LiterateWorkflow`."""
    text = workflow.visit_desc()
    if brain_extraction:
        text = text.rstrip() + "\n" + _DEEPBET + "\n"
    return text


def _bibtex(keys: list[str]) -> str:
    entries = []
    for key in keys:
        kind, fields = REFERENCES[key]
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields.items())
        entries.append(f"@{kind}{{{key},\n{body}\n}}\n")
    return "\n".join(entries)


def _short_citation(key: str) -> str:
    fields = REFERENCES[key][1]
    first = fields["author"].split(" and ")[0].split(",")[0].strip()
    more = " et al." if " and " in fields["author"] else ""
    return f"{first}{more} {fields['year']}"


def _html(markdown: str, keys: list[str]) -> str:
    numbers = {key: index + 1 for index, key in enumerate(keys)}
    paragraphs = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        if block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            paragraphs.append(f"<h{level + 1}>{html.escape(block.lstrip('#').strip())}</h{level + 1}>")
            continue
        escaped = html.escape(" ".join(block.split()))
        linked = _CITATION.sub(lambda match: f'<a href="#ref-{match.group(1)}">[{numbers[match.group(1)]}] '
                               f"{html.escape(_short_citation(match.group(1)))}</a>", escaped)
        emphasised = _EMPHASIS.sub(r"<em>\1</em>", linked)
        paragraphs.append(f"<p>{emphasised}</p>")
    references = "\n".join(
        f'<li id="ref-{key}">{html.escape(REFERENCES[key][1]["author"].replace(" and ", ", "))} '
        f"({REFERENCES[key][1]['year']}). {html.escape(REFERENCES[key][1]['title'].replace('{', '').replace('}', ''))}."
        f"</li>" for key in keys)
    body = "\n".join(paragraphs)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bids_harmony: methods"
            f"</title></head>\n<body>\n<h1>Methods</h1>\n{body}\n<h2>References</h2>\n<ol>\n{references}\n"
            f"</ol>\n</body></html>\n")


def write_boilerplate(workflow, logs_dir: str | Path, brain_extraction: bool = False) -> list[Path]:
    """``CITATION.md`` (pandoc-style ``[@key]`` citations), ``CITATION.bib`` and ``CITATION.html``."""
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    markdown = boilerplate_markdown(workflow, brain_extraction)
    keys = list(dict.fromkeys(_CITATION.findall(markdown)))
    unknown = [key for key in keys if key not in REFERENCES]
    if unknown:
        raise KeyError(f"the methods text cites unknown references: {', '.join(unknown)}")
    written = []
    for name, content in (("CITATION.md", markdown), ("CITATION.bib", _bibtex(keys)),
                          ("CITATION.html", _html(markdown, keys))):
        with atomic_write(logs_dir / name, "w") as stream:
            stream.write(content)
        written.append(logs_dir / name)
    return written
