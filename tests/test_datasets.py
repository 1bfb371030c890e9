"""Labelled datasets: class folders, CSVs, the official UCF-101/HMDB-51 split files, ESC-50 folds, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from avidzoo.datasets import ESC50, HMDB51, UCF101, DatasetError, VideoCSV, VideoFolder, open_dataset

from media import make_video


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_ucf101_split_files(tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")
    (splits / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nArchery/v_Archery_g08_c02.avi 3\r\n"
        "ApplyLipstick/v_ApplyLipstick_g09_c01.avi 2\r\n")
    (splits / "testlist01.txt").write_text(
        "Archery/v_Archery_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    train = UCF101(tmp_path / "UCF-101", splits, fold=1, subset="train")
    assert train.classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert train.labels == [0, 2, 1]
    assert train.paths[1] == tmp_path / "UCF-101" / "Archery" / "v_Archery_g08_c02.avi"
    test = open_dataset(f"ucf101:{splits}", root=tmp_path / "UCF-101", fold=1, subset="test")
    assert test.labels == [2, 0] and test.classes == train.classes
    # the group (g08: clips cut from one video) is read off the names, for splits that keep it whole
    assert train.groups == ["ApplyEyeMakeup/g08", "Archery/g08", "ApplyLipstick/g09"]
    assert train.subset([2, 0]).groups == ["ApplyLipstick/g09", "ApplyEyeMakeup/g08"]
    with pytest.raises(DatasetError, match="testlist02.txt: split file not found"):
        UCF101(tmp_path, splits, fold=2, subset="test")
    with pytest.raises(DatasetError, match="folds 1-3"):
        UCF101(tmp_path, splits, fold=4)
    with pytest.raises(DatasetError, match="--root"):
        open_dataset(f"ucf101:{splits}")


def test_hmdb51_split_files(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 2 \ne.avi 1 \nf.avi 1 \n")
    (splits / "cartwheel_test_split2.txt").write_text("d.avi 1 \n")
    train = HMDB51(tmp_path / "hmdb", splits, fold=1, subset="train")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert [p.name for p in train.paths] == ["a.avi", "e.avi", "f.avi"] and train.labels == [0, 1, 1]
    assert train.paths[0] == tmp_path / "hmdb" / "brush_hair" / "a.avi"
    test = HMDB51(tmp_path / "hmdb", splits, fold=1, subset="test")
    assert [p.name for p in test.paths] == ["b.avi", "d.avi"] and test.labels == [0, 1]
    (splits / "bad_test_split3.txt").write_text("x.avi 7\n")
    with pytest.raises(DatasetError, match=r"bad_test_split3.txt: expected 'video.avi 0\|1\|2', got 'x.avi 7'"):
        HMDB51(tmp_path, splits, fold=3)


def test_class_folder_and_its_errors(tmp_path):
    for name in ("walk", "run", "jump10", "jump9"):
        touch(tmp_path / "data" / name / "a.mp4")
    touch(tmp_path / "data" / "run" / "sub" / "b.mkv")
    data = VideoFolder(tmp_path / "data")
    assert data.classes == ["jump9", "jump10", "run", "walk"]  # natural order
    assert data.counts() == [1, 1, 2, 1]
    (tmp_path / "data" / "empty").mkdir()
    with pytest.raises(DatasetError, match="class folder 'empty' has no media files"):
        VideoFolder(tmp_path / "data")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        VideoFolder(tmp_path / "data" / "walk")


def test_csv_with_segments_and_folds(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label,start,end,fold\nclips/a.mp4,dog,1.5,3,1\n/abs/b.mp4,cat,,,2\n"
                                         "clips/c.mp4,dog,0,2,2\n")
    data = VideoCSV(tmp_path / "labels.csv")
    assert data.classes == ["cat", "dog"] and data.labels == [1, 0, 1]
    assert data.paths[0] == tmp_path / "clips" / "a.mp4" and data.paths[1] == Path("/abs/b.mp4")
    assert data.segments == [(1.5, 3.0), (None, None), (0.0, 2.0)]
    train, test = data.fold(2)
    assert [p.name for p in train.paths] == ["a.mp4"] and [p.name for p in test.paths] == ["b.mp4", "c.mp4"]
    assert VideoCSV(tmp_path / "labels.csv", root=tmp_path / "elsewhere").paths[0] == tmp_path / "elsewhere/clips/a.mp4"
    assert data.groups == [None, None, None]
    (tmp_path / "grouped.csv").write_text("path,label,group\na.mp4,dog,walk1\nb.mp4,dog,walk1\nc.mp4,cat,\n")
    assert VideoCSV(tmp_path / "grouped.csv").groups == ["walk1", "walk1", None]
    (tmp_path / "bad.csv").write_text("path,label,start,end\na.mp4,dog,3,1\n")
    with pytest.raises(DatasetError, match=r"bad.csv, line 2: end 1.0 is not after start 3.0"):
        VideoCSV(tmp_path / "bad.csv")
    (tmp_path / "nolabel.csv").write_text("path,class\na.mp4,dog\n")
    with pytest.raises(DatasetError, match="no 'label' column"):
        VideoCSV(tmp_path / "nolabel.csv")


def test_esc50_layout(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n1-100-A-1.wav,1,1,rooster,False,100,A\n"
        "2-200-A-0.wav,2,0,dog,True,200,A\n1-300-A-0.wav,1,0,dog,True,300,A\n")
    data = open_dataset(f"esc50:{tmp_path}")
    assert data.classes == ["dog", "rooster"] and data.labels == [1, 0, 0] and data.folds == [1, 2, 1]
    assert data.paths[0] == tmp_path / "audio" / "1-100-A-1.wav"
    with pytest.raises(DatasetError, match="no fold 5"):
        data.fold(5)
    with pytest.raises(DatasetError, match="esc50.csv: ESC-50 meta file not found"):
        ESC50(tmp_path / "nowhere")


def test_labels_are_mapped_onto_a_model_head_and_unknown_ones_named(tmp_path):
    for name in ("b", "a"):
        touch(tmp_path / name / "x.mp4")
    data = VideoFolder(tmp_path)
    mapped = data.with_classes(["c", "b", "a"])
    assert mapped.labels == [2, 1] and mapped.classes == ["c", "b", "a"]
    with pytest.raises(DatasetError, match=r"classes \['b'\] are not among the model's 2 labels"):
        data.with_classes(["a", "z"])


def test_unreadable_files_are_found_up_front(tmp_path):
    (tmp_path / "ok").mkdir()
    make_video(tmp_path / "ok" / "good.mp4", seconds=0.5, audio=False)
    (tmp_path / "ok" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    data = VideoFolder(tmp_path).readable()
    assert [p.name for p in data.paths] == ["good.mp4"]
    assert list(data.skipped) == [str(tmp_path / "ok" / "broken.mp4")]
    (tmp_path / "ok" / "good.mp4").unlink()
    with pytest.raises(DatasetError, match="none of its 1 files is readable"):
        VideoFolder(tmp_path).readable()
