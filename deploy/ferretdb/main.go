// Command opswarm-ferretdb serves the MongoDB wire protocol for the local stack with FerretDB v1's
// embeddable package and its SQLite backend. It stops cleanly on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listenAddr := flag.String("listen-addr", "127.0.0.1:27027", "TCP address to serve the MongoDB wire protocol on")
	sqliteDir := flag.String("sqlite-dir", "data", "directory for the SQLite databases")
	flag.Parse()

	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if err := os.MkdirAll(*sqliteDir, 0o755); err != nil {
		logger.Error("cannot create sqlite directory", "dir", *sqliteDir, "error", err)
		os.Exit(1)
	}

	server, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listenAddr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *sqliteDir + "/",
	})
	if err != nil {
		logger.Error("cannot configure ferretdb", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	logger.Info("serving", "listen_addr", *listenAddr, "sqlite_dir", *sqliteDir)
	if err := server.Run(ctx); err != nil && ctx.Err() == nil {
		logger.Error("ferretdb stopped", "error", err)
		os.Exit(1)
	}
	logger.Info("stopped")
}
