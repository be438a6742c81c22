import zipfile

from reki_spark.data.download import amazon_urls, download


def test_zip_archive_is_unpacked_with_its_top_folder_flattened(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-100k/u.data", "1\t1\t5\t881250949\n")
        bundle.writestr("ml-100k/u.item", "1|Toy Story (1995)|\n")
    written = download(archive.as_uri(), tmp_path / "data")
    assert sorted(p.name for p in written) == ["u.data", "u.item"]
    assert (tmp_path / "data" / "u.data").read_text() == "1\t1\t5\t881250949\n"


def test_plain_file_is_stored_as_is(tmp_path):
    source = tmp_path / "reviews_Beauty_5.json.gz"
    source.write_bytes(b"\x1f\x8b not really gzip")
    written = download(source.as_uri(), tmp_path / "data")
    assert written == [tmp_path / "data" / "reviews_Beauty_5.json.gz"]
    assert written[0].read_bytes() == source.read_bytes()


def test_amazon_file_urls_follow_each_release_layout():
    assert amazon_urls("https://host/files/", "amazon-2014", "Beauty") == [
        "https://host/files/reviews_Beauty_5.json.gz",
        "https://host/files/meta_Beauty.json.gz",
    ]
    assert amazon_urls("https://host/v2", "amazon-2018", "All_Beauty")[1].endswith("meta_All_Beauty.json.gz")
