"""The method names of Table 1 (no imports: the CLI reads them before anything heavy)."""

METHODS = ("popularity", "itemcf", "youtube-dnn", "sasrec", "item-dnn", "dnn", "tdm", "hsm", "jtm-j", "jtm-h", "jtm", "jtm-otm", "jtm-seq")
