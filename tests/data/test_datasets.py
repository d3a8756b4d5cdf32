"""load_source and dataset_info: catalog datasets via tfds mock data, and errors."""

import pytest
import tensorflow_datasets as tfds

from jaxvision import data
from jaxvision.errors import UserError


def _mock(num_examples: int = 20):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def test_split_slicing_is_passed_to_tfds(digits_dir):
    assert len(data.load_source("digits", "train[:10]", digits_dir)) == 10
    assert len(data.load_source("digits", "train+test", digits_dir)) == 1797


def test_catalog_info_under_mock_data():
    with _mock():
        mnist = data.dataset_info("mnist")
        imagenet = data.dataset_info("imagenet2012")
        source = data.load_source("mnist", "train")
        record = source[0]
    assert (mnist.num_classes, mnist.image_shape) == (10, (28, 28, 1))
    assert imagenet.num_classes == 1000 and imagenet.image_shape is None
    assert len(source) == 20
    assert record["image"].shape == (28, 28, 1)


def test_unknown_dataset_names_builtins_and_catalog(tmp_path):
    with pytest.raises(UserError, match="Unknown dataset 'no_such_set'") as e:
        data.load_source("no_such_set", "train", str(tmp_path))
    assert "digits" in str(e.value) and "catalog" in str(e.value)


def test_unprepared_catalog_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(UserError) as e:
        data.load_source("mnist", "train", str(tmp_path))
    message = str(e.value)
    assert "'mnist' is not prepared" in message
    assert str(tmp_path) in message
    assert (
        f"tfds build mnist --data_dir {tmp_path} --file_format array_record" in message
    )
    assert "manual" not in message


def test_unprepared_imagenet_mentions_the_manual_download_dir(tmp_path):
    with pytest.raises(UserError, match="imagenet2012") as e:
        data.load_source("imagenet2012", "validation", str(tmp_path))
    assert f"{tmp_path}/downloads/manual" in str(e.value)


def test_unknown_split_lists_the_available_ones(digits_dir):
    with pytest.raises(UserError, match=r"no split 'validation'.*\['train', 'test'\]"):
        data.load_source("digits", "validation", digits_dir)
    with pytest.raises(UserError, match="no split 'train\\+valid'"):
        data.load_source("digits", "train+valid", digits_dir)


@pytest.mark.parametrize("name", data.BUILTIN_DATASETS)
def test_builtin_datasets_are_registered_by_jaxvision(name, tmp_path):
    builder_cls = tfds.builder_cls(name)
    assert builder_cls.__module__.startswith("jaxvision.data.")
