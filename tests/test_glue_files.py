"""GLUE's own distribution files as local tasks: copies of each layout, written here,
read through the config check and prepare-task (with the flags the workflow gives it)."""

import json
import shlex

import pytest

from workflow_scripts import cli
from workflow_scripts.config import check_config
from workflow_scripts.data import read_samples
from workflow_scripts.errors import ConfigError
from workflow_scripts.plan import Plan

BOM = "\ufeff"
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
# GLUE's MRPC: a byte-order mark, and quotes that are plain text (some unbalanced)
MRPC_TRAIN = BOM + MRPC_HEADER + (
    '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " , of '
    'deliberately distorting his evidence .\tReferring to him as only " the witness " , Amrozi '
    'accused his brother of deliberately distorting his evidence .\n'
    '0\t2108705\t2108831\tYucaipa owned Dominick \'s before selling the chain to Safeway in 1998 '
    'for $ 2.5 billion .\tHe said " it was over .\n'
    '1\t1330381\t1330521\tThey had published an advertisement on the Internet on June 10 .\t'
    'On June 10 , the ship \'s owners " published an advertisement .\n'
    '0\t3344667\t3344648\tThe stock rose $ 2.11 , or about 11 percent .\tPG & E Corp. shares '
    'jumped $ 1.63 or 8 percent to $ 21.03 on the New York Stock Exchange .\n'
    '1\t1617809\t1617682\t" It was a bad day for us , he said .\tIt was a bad day , he said .\n'
)
MRPC_DEV = BOM + MRPC_HEADER + (
    '1\t1355540\t1355592\tHe said the foodservice pie business " does not fit .\tThe foodservice '
    'pie business does not fit our long-term growth strategy .\n'
    '0\t2029631\t2029565\tMagnarelli said Racicot hated the Iraqi regime .\tHis wife said he was '
    '" 100 percent behind George Bush " .\n'
)
# RTE exported from the Hugging Face data set with pandas (Dataset.to_csv(sep="\t")):
# fields holding quotes are enclosed in double quotes, inner quotes doubled
RTE_HEADER = "sentence1\tsentence2\tlabel\tidx\n"
RTE_TRAIN = RTE_HEADER + (
    'No Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in '
    'Iraq.\t1\t0\n'
    '"A place of ""sorrow"" after Pope John Paul II died."\tPope Benedict XVI is the new '
    'leader of the Roman Catholic Church.\t0\t1\n'
    'Herceptin was already approved to treat the sickest breast cancer patients.\tHerceptin can '
    'be used to treat breast cancer.\t0\t2\n'
)
RTE_DEV = RTE_HEADER + (
    '"Dana Reeve, the widow of ""Superman"" actor Christopher Reeve, has died."\tChristopher '
    'Reeve had an accident.\t1\t10\n'
    'Yet, we now are discovering that antibiotics are losing their effectiveness.\tBacteria is '
    'winning the war against antibiotics.\t0\t11\n'
)
# GLUE's CoLA: no header row; source, label, original judgement, sentence
COLA_TRAIN = (
    "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
    "gj04\t0\t*\tThey drank the pub.\n"
    'cj99\t1\t\tThe more you eat, the " less you want.\n'
    "bc01\t0\t*\tThe more does Bill smoke, the more Susan hates him.\n"
)
COLA_DEV = (
    "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
    'gj04\t0\t*\tThe " weights made the rope stretch over the pulley.\n'
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def glue_dir(tmp_path):
    for task, train, dev in (("MRPC", MRPC_TRAIN, MRPC_DEV), ("RTE", RTE_TRAIN, RTE_DEV),
                             ("CoLA", COLA_TRAIN, COLA_DEV)):
        write(tmp_path / "glue" / task / "train.tsv", train)
        write(tmp_path / "glue" / task / "dev.tsv", dev)
    (tmp_path / "base").mkdir()
    return tmp_path


def config_for(tasks: dict) -> dict:
    return {
        "tasks": tasks,
        "families": {"f": {"base": "base", "checkpoints": {t: {"finetune": True} for t in tasks}}},
    }


GLUE_TASKS = {
    "mrpc": {"source": "local", "train_file": "glue/MRPC/train.tsv",
             "validation_file": "glue/MRPC/dev.tsv",
             "column_map": {"text_a": "#1 String", "text_b": "#2 String", "label": "Quality"}},
    "rte": {"source": "local", "train_file": "glue/RTE/train.tsv",
            "validation_file": "glue/RTE/dev.tsv", "quoting": "double",
            "column_map": {"text_a": "sentence1", "text_b": "sentence2", "label": "label",
                           "idx": "idx"}},
    "cola": {"source": "local", "train_file": "glue/CoLA/train.tsv",
             "validation_file": "glue/CoLA/dev.tsv", "header": False,
             "column_map": {"text_a": 3, "label": 1}},
}


def prepare_from_config(root, config, task):
    """prepare-task with the flags the workflow gives it (Plan.prepare_task_flags)."""
    out = [root / "out" / task / f for f in ("train.parquet", "validation.parquet", "info.json")]
    flags = shlex.split(Plan(config).prepare_task_flags(task))
    flags = [str(root / f) if f.startswith("glue/") else f for f in flags]
    rc = cli.main(["prepare-task", *flags, "--out-train", str(out[0]),
                   "--out-validation", str(out[1]), "--out-info", str(out[2])])
    return rc, out


def test_glue_layouts_pass_the_config_check_and_prepare(glue_dir):
    config = check_config(config_for(json.loads(json.dumps(GLUE_TASKS))), base_dir=glue_dir)

    rc, out = prepare_from_config(glue_dir, config, "mrpc")
    assert rc == 0
    train, valid = read_samples(out[0]), read_samples(out[1])
    assert train.label == [1, 0, 1, 0, 1] and valid.label == [1, 0]
    assert train.text_a[4] == '" It was a bad day for us , he said .'
    assert train.text_a[0].startswith('Amrozi accused his brother , whom he called " the witness "')
    assert train.text_b[1] == 'He said " it was over .'  # an unbalanced quote, kept as text
    assert valid.text_a[0] == 'He said the foodservice pie business " does not fit .'
    info = json.loads(out[2].read_text())
    assert info["quoting"] == "none" and info["header"] is True and info["is_pair"]

    rc, out = prepare_from_config(glue_dir, config, "rte")
    assert rc == 0
    train, valid = read_samples(out[0]), read_samples(out[1])
    assert train.text_a[1] == 'A place of "sorrow" after Pope John Paul II died.'
    assert valid.text_a[0] == 'Dana Reeve, the widow of "Superman" actor Christopher Reeve, has died.'
    assert train.idx == [0, 1, 2] and valid.idx == [10, 11] and train.label == [1, 0, 0]

    rc, out = prepare_from_config(glue_dir, config, "cola")
    assert rc == 0
    train, valid = read_samples(out[0]), read_samples(out[1])
    assert train.text_a[0] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert train.text_a[2] == 'The more you eat, the " less you want.'
    assert train.label == [1, 0, 1, 0] and valid.label == [1, 0] and train.text_b == [None] * 4
    info = json.loads(out[2].read_text())
    assert info["header"] is False and info["column_map"] == {"text_a": "3", "label": "1"}


def test_bom_is_stripped_from_headers(glue_dir):
    from workflow_scripts.tasks.files import file_columns

    path = glue_dir / "glue" / "MRPC" / "train.tsv"
    assert file_columns(path) == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    csv_path = write(glue_dir / "bom.csv", BOM + "s,y\nx,1\n")
    assert file_columns(csv_path) == ["s", "y"]


def test_malformed_row_names_file_line_and_counts(glue_dir, capsys):
    bad = write(glue_dir / "glue" / "MRPC" / "bad.tsv",
                BOM + MRPC_HEADER + "1\t1\t2\tfine .\tfine too .\n\n0\t3\t4\tonly four columns\n")
    config = config_for(json.loads(json.dumps(GLUE_TASKS)))
    config["tasks"]["mrpc"]["train_file"] = "glue/MRPC/bad.tsv"
    config = check_config(config, base_dir=glue_dir)  # the header is fine
    rc, out = prepare_from_config(glue_dir, config, "mrpc")
    err = capsys.readouterr().err
    assert rc == 2 and not out[0].exists()
    assert f"error: {bad}: line 4 has 4 columns but the header has 5" in err
    assert "quoting: none" in err


def test_quoting_header_and_index_checks(glue_dir):
    def check(**changes):
        tasks = json.loads(json.dumps(GLUE_TASKS))
        for key, value in changes.items():
            task, _, option = key.partition("__")
            tasks[task][option] = value
        return check_config(config_for(tasks), base_dir=glue_dir)

    with pytest.raises(ConfigError, match=r"tasks\.mrpc\.quoting.*'single' is not one of"):
        check(mrpc__quoting="single")
    with pytest.raises(ConfigError, match=r"tasks\.cola\.header.*not of type 'boolean'"):
        check(cola__header="no")
    with pytest.raises(ConfigError) as err:
        check(cola__column_map={"text_a": 4, "label": 1})
    assert str(err.value) == (
        "tasks.cola.column_map: column(s) ['4'] are not in train_file 'glue/CoLA/train.tsv', "
        "which has 4 columns (indices 0..3); fix the column_map or the file")
    with pytest.raises(ConfigError, match=r"tasks\.cola\.column_map: .*0-based column indices"):
        check(cola__column_map={"text_a": "sentence", "label": 1})
    with pytest.raises(ConfigError, match=r"tasks\.mrpc\.quoting: applies to local tasks only"):
        tasks = json.loads(json.dumps(GLUE_TASKS))
        tasks["mrpc"] = {"source": "glue", "quoting": "none"}
        check_config(config_for(tasks), base_dir=glue_dir)


def test_glue_files_read_with_double_quotes_fail_clearly(glue_dir, capsys):
    """Why TSV defaults to quoting: none: MRPC's stray quotes would swallow rows."""
    tasks = json.loads(json.dumps(GLUE_TASKS))
    tasks["mrpc"]["quoting"] = "double"
    config = check_config(config_for(tasks), base_dir=glue_dir)
    rc, out = prepare_from_config(glue_dir, config, "mrpc")
    err = capsys.readouterr().err
    assert rc == 2 and f"{glue_dir / 'glue' / 'MRPC' / 'train.tsv'}: line 6 has 4 columns" in err
    assert "quoting: double" in err
