import pytest

from workflow_scripts import cli
from workflow_scripts.data import read_samples, write_samples
from workflow_scripts.errors import UserError
from workflow_scripts.sampling import draw_samples


def sample(train, n, seed, out, *extra):
    return cli.main(["sample", "--train", str(train), "--n", str(n), "--seed", str(seed),
                     *extra, "--out", str(out)])


@pytest.fixture
def train_file(samples_file):
    return samples_file(n=64, pair=True, num_labels=3, seed=1)


def test_deterministic_bit_identical(train_file, tmp_path):
    assert sample(train_file, 16, 3, tmp_path / "a.parquet") == 0
    assert sample(train_file, 16, 3, tmp_path / "b.parquet") == 0
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    got = read_samples(tmp_path / "a.parquet")
    assert len(got) == 16 and len(set(got.idx)) == 16  # without replacement
    train = read_samples(train_file)
    by_idx = {i: (a, b, y) for i, a, b, y in zip(train.idx, train.text_a, train.text_b, train.label)}
    for i, a, b, y in zip(got.idx, got.text_a, got.text_b, got.label):
        assert by_idx[i] == (a, b, y)


def test_nesting_and_seeds(train_file, tmp_path):
    for n in (8, 32):
        sample(train_file, n, 0, tmp_path / f"n{n}.parquet")
    small, large = read_samples(tmp_path / "n8.parquet"), read_samples(tmp_path / "n32.parquet")
    assert small.idx == large.idx[:8]
    assert small.text_a == large.text_a[:8]
    sample(train_file, 32, 1, tmp_path / "seed1.parquet")
    other = read_samples(tmp_path / "seed1.parquet")
    assert other.idx != large.idx


def test_too_large_and_allow_full(train_file, tmp_path, capsys):
    assert sample(train_file, 65, 0, tmp_path / "x.parquet") == 2
    err = capsys.readouterr().err
    assert "n=65" in err and "64 rows" in err and str(train_file) in err
    assert not (tmp_path / "x.parquet").exists()
    assert sample(train_file, 65, 0, tmp_path / "x.parquet", "--allow-full") == 0
    full = read_samples(tmp_path / "x.parquet")
    assert sorted(full.idx) == sorted(read_samples(train_file).idx)
    sample(train_file, 64, 0, tmp_path / "y.parquet")
    assert read_samples(tmp_path / "y.parquet").idx == full.idx


@pytest.mark.parametrize("n", ["0", "-3", "2.5", "many"])
def test_n_must_be_positive_integer(train_file, tmp_path, n):
    with pytest.raises(SystemExit):
        sample(train_file, n, 0, tmp_path / "x.parquet")
    with pytest.raises(UserError):
        draw_samples(read_samples(train_file), 0, 0)


def test_write_samples_is_deterministic(train_file, tmp_path):
    """The one samples writer: fixed settings, the same rows give the same bytes."""
    import pyarrow.parquet as pq

    samples = read_samples(train_file)
    write_samples(samples, tmp_path / "a.parquet")
    write_samples(samples.to_table(), tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert read_samples(tmp_path / "a.parquet") == samples
