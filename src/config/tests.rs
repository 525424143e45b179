use super::*;

#[test]
fn explore() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    for t in [
        "[server]\nlisten = \"x\"\n[pool]\nkeys = []\ncooldown = \"0s\"\n",
        "[server]\nlisten = 5\n",
        "[server]\nbogus = 5\n",
        "[pool]\nkeys = [{ key = \"AIzaSECRETSECRET123\", nmae = \"x\" }]\n",
        "[[pool.keys]]\nkey = \"AIzaSECRETSECRET123\"\nnmae = \"x\"\n",
        "[pool]\nkeys = [\"a\", { key = \"AIzaSECRETSECRET123\", daily_limit = \"AIzaSECRET2\" }]\n",
        "[pool]\nkeys = [AIzaSECRETBARE]\n",
        "[pool]\nkeys = [\"AIzaSECRET\n",
        "[models.aliases]\nfast = { model = \"a\", bogus = 1 }\n",
        "[models.aliases]\nfast = 3\n",
        "[server]\nlisten = \"x\"\n\n[pool]\ncooldown = \"0s\"\n",
        "bogus = 1\n",
    ] {
        std::fs::write(&p, t).unwrap();
        match load(&p) {
            Ok(_) => println!("OK\n"),
            Err(e) => println!("{t}=>\n{e}\n"),
        }
    }
}
